package state

import (
	"fmt"
	"math/rand/v2"
)

// validName is podman's rule for container names,
// [a-zA-Z0-9][a-zA-Z0-9_.-]*, by hand: a regexp compiled at init costs
// every fcvm command, and fcvm ls must start fast.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return s != ""
}

var adjectives = [...]string{
	"agile", "amber", "bold", "brave", "bright", "brisk", "calm", "clever",
	"cosmic", "crisp", "daring", "eager", "fierce", "fond", "gentle", "glad",
	"golden", "happy", "hardy", "jolly", "keen", "kind", "lively", "lucid",
	"mellow", "merry", "mighty", "nimble", "noble", "patient", "placid",
	"proud", "quick", "quiet", "rapid", "serene", "sharp", "shiny", "silent",
	"sleek", "snowy", "steady", "stoic", "sunny", "swift", "tender", "tidy",
	"vivid", "wise", "witty", "zealous",
}

// Birds, for no reason beyond being many and short.
var nouns = [...]string{
	"albatross", "auk", "bittern", "bunting", "buzzard", "condor", "crane",
	"curlew", "dipper", "dunlin", "eagle", "egret", "falcon", "finch",
	"flamingo", "gannet", "goldcrest", "grebe", "harrier", "heron", "hoopoe",
	"ibis", "jay", "kestrel", "kingfisher", "kite", "lapwing", "lark",
	"magpie", "martin", "merlin", "nightjar", "nuthatch", "oriole", "osprey",
	"owl", "pelican", "petrel", "plover", "puffin", "raven", "redstart",
	"robin", "sandpiper", "shrike", "siskin", "skylark", "sparrow", "starling",
	"stork", "swallow", "swift", "tern", "thrush", "wagtail", "warbler",
	"waxwing", "wren",
}

// generateName picks an adjective_noun name that taken does not hold,
// adding a number once plain names keep colliding, as podman does.
func generateName(taken map[string]bool) string {
	for i := 0; ; i++ {
		name := adjectives[rand.IntN(len(adjectives))] + "_" + nouns[rand.IntN(len(nouns))]
		if i >= 10 {
			name += fmt.Sprint(rand.IntN(1000))
		}
		if !taken[name] {
			return name
		}
	}
}
