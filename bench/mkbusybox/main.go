// Command mkbusybox writes a busybox OCI archive for the demo and the
// benchmarks: go run ./bench/mkbusybox -o busybox.tar
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/fcvm/fcvm/bench/busybox"
)

func main() {
	out := flag.String("o", "busybox.tar", "where to write the OCI archive")
	flag.Parse()
	if err := busybox.WriteOCIArchive(*out); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}
