/* The floor for a user-space TCP forwarder on this machine, for bench/roundtrip/run.sh: the
 * simplest one there is, a blocking thread per direction (recv, then send), no event loop.
 * With a third argument each thread polls with MSG_DONTWAIT and sched_yield() instead of
 * sleeping in recv (busy polling: no wakeup to pay, a core burnt instead).
 *
 * usage: fwd LISTEN_PORT BACKEND_PORT [spin]     (127.0.0.1 on both sides)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int spin;

struct direction {
	int from, to;
};

static void *copy(void *arg)
{
	struct direction *d = arg;
	char buf[65536];
	for (;;) {
		ssize_t n = recv(d->from, buf, sizeof buf, spin ? MSG_DONTWAIT : 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (spin)
				sched_yield();
			continue;
		}
		if (n <= 0)
			break;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = send(d->to, buf + off, n - off, MSG_NOSIGNAL);
			if (w <= 0)
				goto out;
			off += w;
		}
	}
out:
	shutdown(d->to, SHUT_WR);
	return NULL;
}

static void start(int from, int to)
{
	struct direction *d = malloc(sizeof *d);
	pthread_t t;
	d->from = from;
	d->to = to;
	pthread_create(&t, NULL, copy, d);
	pthread_detach(t);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: fwd LISTEN_PORT BACKEND_PORT [spin]\n");
		return 2;
	}
	spin = argc > 3;
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in at = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in backend = at;
	at.sin_port = htons(atoi(argv[1]));
	backend.sin_port = htons(atoi(argv[2]));
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(l, (struct sockaddr *)&at, sizeof at) || listen(l, 128)) {
		perror("fwd: bind/listen");
		return 1;
	}
	for (;;) {
		int c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&backend, sizeof backend)) {
			close(c);
			close(s);
			continue;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		start(c, s);
		start(s, c);
	}
}
