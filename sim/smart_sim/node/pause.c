/* The pod sandbox's process for the local node: holds the pod's namespaces, reaps
 * orphaned children, and exits on SIGINT or SIGTERM, as Kubernetes' own pause does
 * (build/pause/linux/pause.c). Built statically by smart_sim.node.pause. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signum) {
    (void)signum;
    _exit(0);
}

static void reap(int signum) {
    (void)signum;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction action = {0};
    action.sa_handler = stop;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    action.sa_handler = reap;
    action.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, NULL);
    for (;;) {
        pause();
    }
}
