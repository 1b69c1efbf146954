/* The init process (PID 1) of every Lattice container: it holds the container's
 * namespaces open and reaps orphaned zombies. As PID 1 of its namespace it ignores
 * every signal it has no handler for, so stopping a container sends SIGTERM to the
 * work, waits, and only then SIGKILLs this (which takes the namespace down). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {}
}

int main(void) {
    struct sigaction r = {0};
    r.sa_handler = reap;
    r.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &r, 0);
    for (;;) pause();
    return 0;
}
