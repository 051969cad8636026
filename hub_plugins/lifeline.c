/* The lifeline of a single-user server, in C: what lifeline.py does for a server, started in a
 * fraction of a millisecond of CPU instead of the 8-12 ms a Python interpreter takes (measured on
 * 2 cores, where every starting server's lifeline shares the cores with the hub and the others).
 *
 * Same command line (--beat-fd N, --every S, --join FILE..., --user NAME, --chdir DIR, then the
 * command after "--"), the same 64-byte records ("beat <unix time>", "exit <unix time> <status>"),
 * the same signals (SIGINT/SIGTERM/SIGHUP go to the child's process group; the child gets SIGKILL
 * when the lifeline dies) and the same exit statuses (the child's, 128 + signal when a signal
 * ended it; 2 for a bad command line, 127 when the command cannot run). Hub services keep
 * lifeline.py, whose --with-parent, --pidfile, --grace and --prebind this one refuses.
 *
 * Built by `make install` into the environment's bin/ (reconcile/local.py uses it only when it is
 * at least as new as this file); the tests run both lifelines through the same cases.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE 64
#define MAX_JOIN 16
/* the hub renames the dynamic loader's variables with this prefix for a lifeline it starts as
 * root (lifeline.py LOADER_PREFIX): given back once the lifeline is the server's user */
#define LOADER_PREFIX "GPULAB_LOADER_"

struct options {
    int beat_fd;
    double every;
    const char *join[MAX_JOIN];
    int njoin;
    const char *user, *chdir;
    char **command;
};

/* says what is wrong with the command line; the exit status for it (2, as lifeline.py's) */
__attribute__((format(printf, 1, 2))) static int usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dprintf(2, "lifeline: ");
    vdprintf(2, fmt, ap);
    dprintf(2, "\n");
    va_end(ap);
    return 2;
}

/* "--name value" or "--name=value"; 0 when parsed, else the exit status (2) */
static int parse(int argc, char **argv, struct options *o) {
    o->beat_fd = -1;
    o->every = 60.0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (strcmp(arg, "--") == 0 || strncmp(arg, "--", 2) != 0) {
            o->command = strcmp(arg, "--") == 0 ? argv + i + 1 : argv + i;
            break;
        }
        char name[32], *value = strchr(arg, '=');
        size_t len = value ? (size_t)(value - arg) : strlen(arg);
        if (len >= sizeof name)
            return usage("unknown option %s", arg);
        memcpy(name, arg, len);
        name[len] = 0;
        int known = !strcmp(name, "--beat-fd") || !strcmp(name, "--every") || !strcmp(name, "--join") ||
                    !strcmp(name, "--user") || !strcmp(name, "--chdir");
        if (!known)
            return usage("unknown option %s", name);
        if (value)
            value++;
        else if (i + 1 < argc)
            value = argv[++i];
        else
            return usage("%s needs a value", name);
        char *end;
        if (!strcmp(name, "--beat-fd")) {
            long fd = strtol(value, &end, 10);
            if (!*value || *end || fd < 0 || fd > 1 << 20)
                return usage("%s needs a number, got '%s'", name, value);
            o->beat_fd = (int)fd;
        } else if (!strcmp(name, "--every")) {
            o->every = strtod(value, &end);
            if (!*value || *end || !(o->every > 0 && o->every < 1e9))
                return usage("%s needs a number, got '%s'", name, value);
        } else if (!strcmp(name, "--join")) {
            if (o->njoin == MAX_JOIN)
                return usage("too many --join");
            o->join[o->njoin++] = value;
        } else if (!strcmp(name, "--user")) {
            o->user = value;
        } else {
            o->chdir = value;
        }
    }
    if (!o->command || !o->command[0])
        return usage("no command");
    return 0;
}

static double now_unix(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double now_mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void write_record(int fd, const char *kind, int status, int with_status) {
    char text[LINE + 32], line[LINE];
    int n = with_status ? snprintf(text, sizeof text, "%s %.3f %d", kind, now_unix(), status)
                        : snprintf(text, sizeof text, "%s %.3f", kind, now_unix());
    if (n > LINE - 1)
        n = LINE - 1;
    memset(line, ' ', LINE - 1);
    memcpy(line, text, (size_t)n);
    line[LINE - 1] = '\n';
    if (pwrite(fd, line, LINE, 0) < 0) { /* a full disk: the next record tries again */
    }
}

static void die(const char *what, const char *arg) {
    dprintf(2, "lifeline: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
    exit(1);
}

/* as lifeline.py become(): into the server's cgroups (as root), its user, its home */
static void become(const struct options *o) {
    char pid[24];
    int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
    for (int i = 0; i < o->njoin; i++) {
        int fd = open(o->join[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, pid, (size_t)n) != n)
            die("cannot join", o->join[i]);
        close(fd);
    }
    if (o->user && *o->user) {
        struct passwd *pw = getpwnam(o->user);
        if (!pw) {
            errno = ENOENT;
            die("no such user", o->user);
        }
        uid_t uid = pw->pw_uid;
        gid_t gid = pw->pw_gid, groups[1024];
        int ngroups = 1024;
        if (setgid(gid) != 0)
            die("cannot set the group of", o->user);
        if (getgrouplist(o->user, gid, groups, &ngroups) < 0 || setgroups((size_t)ngroups, groups) != 0) {
            ngroups = 0; /* never keep root's groups */
            if (setgroups(0, NULL) != 0)
                die("cannot set the groups of", o->user);
        }
        if (setuid(uid) != 0)
            die("cannot become", o->user);
        gid_t now[1024];
        int have = getgroups(1024, now);
        int ok = getuid() == uid && geteuid() == uid && getgid() == gid && have >= 0;
        for (int i = 0; ok && i < have; i++) {
            int found = now[i] == gid;
            for (int j = 0; !found && j < ngroups; j++)
                found = now[i] == groups[j];
            ok = found;
        }
        if (!ok) {
            errno = EPERM;
            die("could not become", o->user);
        }
    }
    if (o->chdir && *o->chdir) { /* as JupyterHub's _try_setcwd: the nearest directory that can be entered */
        char path[4096];
        snprintf(path, sizeof path, "%s", o->chdir);
        while (chdir(path) != 0) {
            if (!strcmp(path, "/") || !*path)
                die("cannot enter", o->chdir);
            char *slash = strrchr(path, '/');
            if (slash == path)
                path[1] = 0;
            else if (slash)
                *slash = 0;
            else
                strcpy(path, "/");
        }
    }
    /* the loader's variables, for the server only (never for this process, started as root) */
    extern char **environ;
    size_t plen = strlen(LOADER_PREFIX), count = 0;
    for (char **e = environ; *e; e++)
        count += strncmp(*e, LOADER_PREFIX, plen) == 0;
    if (!count)
        return;
    char **aside = calloc(count, sizeof *aside);
    size_t k = 0;
    for (char **e = environ; *e && k < count; e++)
        if (strncmp(*e, LOADER_PREFIX, plen) == 0)
            aside[k++] = strdup(*e);
    for (size_t i = 0; i < k; i++) {
        char *eq = strchr(aside[i], '=');
        if (!eq)
            continue;
        *eq = 0;
        unsetenv(aside[i]);
        if (eq - aside[i] > (long)plen)
            setenv(aside[i] + plen, eq + 1, 1);
    }
}

int main(int argc, char **argv) {
    struct options o = {0};
    int bad = parse(argc, argv, &o);
    if (bad)
        return bad;
    sigset_t stops, old;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGHUP);
    sigaddset(&stops, SIGCHLD);
    /* blocked from the start: a stop signal before the child exists is read below, not lost */
    sigprocmask(SIG_BLOCK, &stops, &old);
    signal(SIGCHLD, SIG_DFL); /* waitpid must see the child, whatever we inherited */
    if (o.njoin || o.user || o.chdir)
        become(&o);
    int sfd = signalfd(-1, &stops, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die("signalfd", NULL);
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) == sizeof si)
        if (si.ssi_signo != SIGCHLD) /* told to stop before the command even started */
            return 128 + (int)si.ssi_signo;

    pid_t me = getpid(), pid = fork();
    if (pid < 0)
        die("cannot fork for", o.command[0]);
    if (pid == 0) { /* the child: default signals, its own process group, dies with us */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != me) /* we died before the request took effect */
            _exit(137);
        close(sfd);
        if (o.beat_fd >= 0)
            close(o.beat_fd);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        sigprocmask(SIG_UNBLOCK, &stops, NULL);
        execvp(o.command[0], o.command);
        dprintf(2, "lifeline: cannot run %s: %s\n", o.command[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: a signal may come before the child got to it */
    if (o.beat_fd >= 0)
        write_record(o.beat_fd, "beat", 0, 0);
    double next_beat = now_mono() + o.every;
    int status = 0;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid || (done < 0 && errno == ECHILD))
            break;
        double now = now_mono();
        if (o.beat_fd >= 0 && now >= next_beat) {
            write_record(o.beat_fd, "beat", 0, 0);
            next_beat = now + o.every;
        }
        double wait_ms = (next_beat - now) * 1000 + 1; /* at most an hour a wait: never past an int */
        int timeout = o.beat_fd < 0 ? -1 : wait_ms > 3600e3 ? 3600000 : (int)wait_ms;
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        if (poll(&p, 1, timeout) > 0)
            while (read(sfd, &si, sizeof si) == sizeof si)
                if (si.ssi_signo != SIGCHLD) /* servers get what the hub sent */
                    killpg(pid, (int)si.ssi_signo);
    }
    int code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    if (o.beat_fd >= 0)
        write_record(o.beat_fd, "exit", code, 1);
    return code;
}
