//go:build ignore

// (The line above keeps the Go tool from treating this file as cgo source;
// the benchmark embeds it and compiles it with gcc.)

/*
 * chandler: the minimal userfaultfd page-fault handler fcvm's UFFD server is
 * measured against. Single-threaded: one poll(2) over the listening socket
 * and every client's userfaultfd; Firecracker's handshake (JSON regions plus
 * the userfaultfd as SCM_RIGHTS); one UFFDIO_COPY per missing page from a
 * shared read-only mapping of the memory file. It does the same per-fault
 * work as the Go server (including MADV_POPULATE_READ of the source before
 * a 2 MiB copy) and nothing more: no removes, stats or timeouts.
 *
 * usage: chandler MEMFILE SOCKET   (prints "ready" once listening)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define MAX_CLIENTS 64
#define MAX_REGIONS 32

struct region { uint64_t base, size, offset, page_size; };
struct client { int uffd; int n; struct region r[MAX_REGIONS]; };

static char *mem;
static struct client clients[MAX_CLIENTS];
static struct pollfd pfds[MAX_CLIENTS + 1];
static int nclients;

static uint64_t field(const char **p, const char *name) {
	const char *q = strstr(*p, name);
	if (!q) return 0;
	q += strlen(name);
	while (*q == '"' || *q == ':' || *q == ' ') q++;
	return strtoull(q, NULL, 10);
}

static void accept_client(int lfd) {
	int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0) return;
	char buf[65536], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(c, &m, MSG_CMSG_CLOEXEC);
	close(c);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (n <= 0 || !cm || cm->cmsg_type != SCM_RIGHTS || nclients == MAX_CLIENTS) return;
	buf[n] = 0;
	struct client *cl = &clients[nclients];
	memcpy(&cl->uffd, CMSG_DATA(cm), sizeof(int));
	cl->n = 0;
	for (const char *p = buf; (p = strstr(p, "{")) && cl->n < MAX_REGIONS; p++) {
		struct region *r = &cl->r[cl->n++];
		const char *q = p;
		r->base = field(&q, "\"base_host_virt_addr\"");
		r->size = field(&q, "\"size\"");
		r->offset = field(&q, "\"offset\"");
		r->page_size = field(&q, "\"page_size\"");
	}
	pfds[nclients + 1] = (struct pollfd){ .fd = cl->uffd, .events = POLLIN };
	nclients++;
}

/* One read of up to 64 messages per wake-up, as the Go server does. */
static void serve(struct client *cl) {
	struct uffd_msg msgs[64];
	ssize_t n = read(cl->uffd, msgs, sizeof(msgs));
	for (ssize_t k = 0; k < n / (ssize_t)sizeof(msgs[0]); k++) {
		if (msgs[k].event != UFFD_EVENT_PAGEFAULT) continue;
		uint64_t addr = msgs[k].arg.pagefault.address;
		for (int i = 0; i < cl->n; i++) {
			struct region *r = &cl->r[i];
			if (addr < r->base || addr >= r->base + r->size) continue;
			uint64_t dst = addr & ~(r->page_size - 1);
			char *src = mem + r->offset + (dst - r->base);
			if (r->page_size > 4096)
				madvise((void *)((uintptr_t)src & ~4095UL), r->page_size, MADV_POPULATE_READ);
			struct uffdio_copy cp = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = r->page_size };
			while (ioctl(cl->uffd, UFFDIO_COPY, &cp) < 0 && errno == EAGAIN)
				cp.copy = 0;
			break;
		}
	}
}

int main(int argc, char **argv) {
	if (argc != 3) { fprintf(stderr, "usage: chandler MEMFILE SOCKET\n"); return 2; }
	int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) { perror(argv[1]); return 1; }
	mem = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED) { perror("mmap"); return 1; }
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strncpy(sa.sun_path, argv[2], sizeof(sa.sun_path) - 1);
	unlink(argv[2]);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 128) < 0) { perror("listen"); return 1; }
	printf("ready\n");
	fflush(stdout);
	pfds[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
	for (;;) {
		if (poll(pfds, nclients + 1, -1) < 0) { if (errno == EINTR) continue; perror("poll"); return 1; }
		for (int i = 0; i < nclients; i++)
			if (pfds[i + 1].revents & POLLIN) serve(&clients[i]);
		if (pfds[0].revents & POLLIN) accept_client(lfd);
	}
}
