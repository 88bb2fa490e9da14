// Command fc-agent is PID 1 of an fcvm guest. See package agent.
package main

import "github.com/fcvm/fcvm/internal/agent"

func main() { agent.Main() }
