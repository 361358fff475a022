/*
 * prefork.c - the smallest prefork TCP server we can write: the practical
 * ceiling of "one master, one listening socket, N workers blocking in accept()".
 *
 *   usage: prefork PORT WORKERS        (PORT 0 = let the kernel pick one)
 *
 * The master binds 127.0.0.1:PORT, listens (backlog 1024), forks WORKERS
 * children and prints "ready <port>\n" on stdout once they are all forked.
 * Each child loops: accept() -> send "Hello from <pid>\n" -> close().
 * SIGINT/SIGTERM to the master are forwarded to the children; the master
 * waits for all of them and exits.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o prefork prefork.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 1024

static volatile sig_atomic_t pending_signal = 0;

static void on_signal(int sig) { pending_signal = sig; }

static long parse_long(const char *s, long lo, long hi, const char *what) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "prefork: invalid %s '%s' (expected %ld..%ld)\n", what, s, lo, hi);
        exit(2);
    }
    return v;
}

static void send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* client went away (EPIPE/ECONNRESET): nothing to do */
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void worker_loop(int listen_fd, pid_t master) {
    /* Die with the master even if it is SIGKILLed. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master)
        _exit(0);

    char msg[64];
    int len = snprintf(msg, sizeof msg, "Hello from %d\n", (int)getpid());
    for (;;) {
        int c = accept(listen_fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct timespec ts = {0, 10 * 1000 * 1000}; /* back off 10 ms */
                nanosleep(&ts, NULL);
                continue;
            }
            perror("prefork: accept");
            _exit(1);
        }
        send_all(c, msg, (size_t)len);
        close(c);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT WORKERS   (PORT 0 = any free port)\n", argv[0]);
        return 2;
    }
    int port = (int)parse_long(argv[1], 0, 65535, "port");
    int workers = (int)parse_long(argv[2], 1, MAX_WORKERS, "worker count");

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { perror("prefork: socket"); return 1; }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
        perror("prefork: setsockopt(SO_REUSEADDR)");
        return 1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("prefork: bind"); return 1; }
    if (listen(fd, 1024) < 0) { perror("prefork: listen"); return 1; }
    socklen_t alen = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &alen) < 0) { perror("prefork: getsockname"); return 1; }
    port = ntohs(addr.sin_port);

    /* Block SIGINT/SIGTERM while forking so that no signal is lost between
       fork() and installing the master's handler; children restore defaults. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);

    pid_t master = getpid();
    pid_t pids[MAX_WORKERS];
    int alive = 0;
    fflush(stdout);
    for (int i = 0; i < workers; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("prefork: fork");
            for (int j = 0; j < alive; j++)
                kill(pids[j], SIGTERM);
            return 1;
        }
        if (pid == 0) {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            sigprocmask(SIG_SETMASK, &old, NULL);
            worker_loop(fd, master);
        }
        pids[alive++] = pid;
    }
    close(fd); /* the master never accepts */

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: waitpid() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    printf("ready %d\n", port);
    fflush(stdout);
    sigprocmask(SIG_SETMASK, &old, NULL);

    while (alive > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) {
                int sig = pending_signal;
                pending_signal = 0;
                if (sig != 0)
                    for (int i = 0; i < workers; i++)
                        if (pids[i] > 0)
                            kill(pids[i], sig);
                continue;
            }
            if (errno == ECHILD)
                break;
            perror("prefork: waitpid");
            return 1;
        }
        for (int i = 0; i < workers; i++)
            if (pids[i] == pid) {
                pids[i] = 0;
                alive--;
            }
        if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM && WTERMSIG(status) != SIGINT)
            fprintf(stderr, "prefork: worker %d killed by signal %d\n", (int)pid, WTERMSIG(status));
        else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
            fprintf(stderr, "prefork: worker %d exited with %d\n", (int)pid, WEXITSTATUS(status));
    }
    return 0;
}
