// Command mkbusybox writes a busybox OCI archive for the demo and the
// benchmarks: go run ./bench/mkbusybox -o busybox.tar (-bash: with a
// /bin/bash that runs busybox sh, for the E2B SDK's commands)
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/fcvm/fcvm/bench/busybox"
)

func main() {
	out := flag.String("o", "busybox.tar", "where to write the OCI archive")
	bash := flag.Bool("bash", false, "add a /bin/bash that runs busybox sh (the E2B SDK runs /bin/bash -l -c CMD)")
	flag.Parse()
	image := busybox.Image
	if *bash {
		image = busybox.WithBash
	}
	img, err := image()
	if err == nil {
		err = busybox.WriteImage(img, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}
