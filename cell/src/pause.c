/* The init process (PID 1) of every Lattice container.
 *
 * Without arguments it holds the container's namespaces open and reaps orphaned
 * zombies; the work is exec'd into the container beside it. As PID 1 of its namespace
 * it ignores every signal it has no handler for, so stopping a container sends SIGTERM
 * to the work, waits, and only then SIGKILLs this (which takes the namespace down).
 *
 * With arguments (a container whose whole work is one Run action) it runs them as its
 * only child, passes every signal it gets on to that child, reaps orphans, and exits
 * with the child's status as a shell reports it (128 + signal when killed). If the
 * command cannot be executed, its errno is written to fd 3 when fd 3 is open (the shim
 * reads the other end); the child then exits 127. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {}
}

static int run(char **argv) {
    int report = fcntl(3, F_GETFD) >= 0 ? 3 : -1;
    if (report >= 0) fcntl(report, F_SETFD, FD_CLOEXEC);
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t child = fork();
    if (child < 0) {
        int e = errno;
        if (report >= 0 && write(report, &e, sizeof e) < 0) {}
        return 126;
    }
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, 0);
        execvp(argv[0], argv);
        int e = errno;
        if (report >= 0 && write(report, &e, sizeof e) < 0) {}
        _exit(127);
    }
    if (report >= 0) close(report);
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0) continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        int status;
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
            if (p != child) continue;
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
        }
    }
}

int main(int argc, char **argv) {
    if (argc > 1) return run(argv + 1);
    struct sigaction r = {0};
    r.sa_handler = reap;
    r.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &r, 0);
    for (;;) pause();
    return 0;
}
