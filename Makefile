GO ?= go
BIN := bin

.PHONY: build test demo
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/fcvm ./cmd/fc-agent ./cmd/containerd-shim-fcvm-v2

test:
	bash scripts/test.sh

demo: build
	bash scripts/demo.sh
