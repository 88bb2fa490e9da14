#!/usr/bin/env bash
# The main job on a fresh machine: install what fcvm needs, build it, build
# the guest artifacts, run a container in a microVM, then snapshot a web
# server and clone it. Needs root (debootstrap; bridged-free otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH=/usr/local/go/bin:$PATH
make build
fcvm=bin/fcvm
$fcvm setup
$fcvm doctor || true

img=/tmp/fcvm-demo-busybox.tar
go run ./bench/mkbusybox -o "$img" >/dev/null
ref=oci-archive:$img

echo "== a container in a microVM"
$fcvm run --rm "$ref" sh -c 'echo "hello from $(hostname), kernel $(uname -r)"; exit 3' || echo "exit code $?"

echo "== a web server, detached, published on 127.0.0.1:18080"
$fcvm rm -f demo-web demo-clone >/dev/null 2>&1 || true
$fcvm snapshot rm -f demo-snap >/dev/null 2>&1 || true
$fcvm run -d --name demo-web -p 127.0.0.1:18080:80 "$ref" httpd -f -p 80 -h /var/www
for i in $(seq 60); do curl -fsS http://127.0.0.1:18080/ && break; sleep 1; done
$fcvm ls

echo "== snapshot it and start a clone on 127.0.0.1:18081"
$fcvm snapshot create demo-web --tag demo-snap
time $fcvm snapshot run demo-snap -d --name demo-clone -p 127.0.0.1:18081:80
for i in $(seq 60); do curl -fsS http://127.0.0.1:18081/ && break; sleep 1; done
$fcvm ls
$fcvm inspect --format '{{.Name}}: VMM RSS {{.Fcvm.Memory.RSSKiB}} KiB, PSS {{.Fcvm.Memory.PSSKiB}} KiB' demo-web demo-clone

echo "== clean up"
$fcvm rm -f demo-clone demo-web
$fcvm snapshot rm demo-snap
