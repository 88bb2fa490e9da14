package cli

import "github.com/fcvm/fcvm/internal/engine"

// engine is the one API every verb drives VMs through.
func (env *Env) engine() *engine.Engine { return engine.New(env.Dirs, env.Log) }
