// The machine's floor under every mediated I/O: what a system call, a 64 B pread, and a
// hand-off between two processes cost here, with no trace2e code involved. The benches'
// targets assume a machine where these are cheap; run this first to see whether this one
// is (perf/README.md, "The machine's floor").
//
//   gcc -O2 -o /tmp/machine_floor perf/machine_floor.c && /tmp/machine_floor
//
// Each hand-off is a round trip between a parent and a forked child over one shared
// word: spinning on another CPU (what a polling daemon gives), sched_yield on one CPU,
// and FUTEX_WAIT/FUTEX_WAKE on one CPU and across CPUs (what a sleeping daemon gives).
// Medians of 7 runs of 20 000 round trips each.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ROUNDS = 20000, RUNS = 7 };
enum wait { SPIN, YIELD, FUTEX };

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Waits until *w == want, the `how` way; `seen` is the value it had before.
static void await_word(_Atomic int *w, int seen, int want, enum wait how) {
    while (atomic_load(w) != want) {
        if (how == YIELD) {
            sched_yield();
        } else if (how == FUTEX) {
            syscall(SYS_futex, w, FUTEX_WAIT, seen, NULL, NULL, 0);
        } else {
            __builtin_ia32_pause();
        }
    }
}

static void post(_Atomic int *w, int v, enum wait how) {
    atomic_store(w, v);
    if (how == FUTEX) syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

// One run: microseconds per round trip, parent on cpu_a, child on cpu_b.
static double round_trip(enum wait how, int cpu_a, int cpu_b) {
    _Atomic int *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    atomic_store(w, 0);
    pid_t child = fork();
    if (child == 0) {
        pin(cpu_b);
        for (int i = 0; i < ROUNDS; i++) {
            await_word(w, 2 * i, 2 * i + 1, how);
            post(w, 2 * i + 2, how);
        }
        _exit(0);
    }
    pin(cpu_a);
    long start = now_ns();
    for (int i = 0; i < ROUNDS; i++) {
        post(w, 2 * i + 1, how);
        await_word(w, 2 * i + 1, 2 * i + 2, how);
    }
    long end = now_ns();
    waitpid(child, NULL, 0);
    munmap((void *)w, 4096);
    return (end - start) / 1000.0 / ROUNDS;
}

static double median_round_trip(enum wait how, int cpu_a, int cpu_b) {
    double r[RUNS];
    for (int i = 0; i < RUNS; i++) r[i] = round_trip(how, cpu_a, cpu_b);
    qsort(r, RUNS, sizeof r[0], cmp);
    return r[RUNS / 2];
}

int main(void) {
    cpu_set_t mine;
    sched_getaffinity(0, sizeof mine, &mine);
    int cpus[2], n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
        if (CPU_ISSET(c, &mine)) cpus[n++] = c;

    long start = now_ns();
    for (int i = 0; i < 200000; i++) syscall(SYS_getppid);
    printf("system call (getppid)           %8.3f us\n", (now_ns() - start) / 1000.0 / 200000);

    char path[] = "/tmp/machine_floor.XXXXXX", buf[64] = {0};
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, buf, sizeof buf) != sizeof buf) {
        perror("scratch file");
        return 1;
    }
    unlink(path);
    start = now_ns();
    for (int i = 0; i < 200000; i++)
        if (pread(fd, buf, sizeof buf, 0) != sizeof buf) return 1;
    printf("pread 64 B (page cache)         %8.3f us\n", (now_ns() - start) / 1000.0 / 200000);

    if (n == 2) {
        printf("round trip, spin, two CPUs      %8.3f us\n", median_round_trip(SPIN, cpus[0], cpus[1]));
        printf("round trip, futex, two CPUs     %8.3f us\n", median_round_trip(FUTEX, cpus[0], cpus[1]));
    }
    printf("round trip, sched_yield, 1 CPU  %8.3f us\n", median_round_trip(YIELD, cpus[0], cpus[0]));
    printf("round trip, futex, 1 CPU        %8.3f us\n", median_round_trip(FUTEX, cpus[0], cpus[0]));
    return 0;
}
