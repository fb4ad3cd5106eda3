// The harness's scheduler: runs the threads of each threadgroup as cooperatively switched fibers
// (one small stack each, an x86-64 context switch), releases threadgroup barriers and SIMD-group
// collectives by rendezvous, owns threadgroup memory (guard pages, poison at each group start, the
// 32 KiB limit) and reports synchronisation errors with the threads and file:line instead of hanging.
//
// A launch first runs serially (every thread to completion on the caller's stack, as fast as a plain
// loop); the first synchronisation call in serial mode unwinds with MSL_NEEDS_FIBERS and the caller
// reruns the launch on fibers. Groups run one after another on the calling OS thread.
#define _GNU_SOURCE
#include "../shim/msl_scheduler.h"

#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define MAX_THREADS 1024
#define TG_LIMIT 32768
#define STACK_BYTES (256 * 1024)
#define MAX_REGIONS 64
#define PARAM_ID_BASE 0x10000u

enum { RUNNABLE, AT_BARRIER, AT_COLLECTIVE, DONE };

typedef struct fiber {
    void *sp;
    unsigned state;
    const char *what, *file;        // where it waits: threadgroup_barrier, simd_sum, ... at file:line:col
    unsigned line, col;
    msl_resolver resolve;
    void *in, *in2, *out;
    unsigned arg, arg2;
    msl_pos pos;
    char *stack;                    // lowest usable byte (a guard page lies below)
} fiber;

// Last write and read of one byte of threadgroup memory, for the race check (msl_tg_access).
typedef struct shadow {
    unsigned w_phase, w_sg, w_site, r_phase, r_sg, r_site;
    unsigned short writer, reader;  // thread index; reader MANY: several threads read it in this phase
} shadow;
#define MANY 0xFFFFu

typedef struct region {
    unsigned id;
    unsigned long size;
    const char *name, *file;
    unsigned line;
    char *map, *data;
    size_t map_len;
    shadow *shadow;
} region;

static struct {  // one launch at a time per library (groups run on the calling OS thread)
    msl_dispatch *d;
    fiber *fibers;
    char *stacks;
    unsigned n_stacks;  // threads with a mapped stack
    fiber *cur;
    void *main_sp;
    int failed;
    jmp_buf serial_bail;
    region regions[MAX_REGIONS];
    unsigned nregions;
    unsigned long tg_total;
    unsigned group[3];
    char *altstack;
    // race check: a clock ticks at every group start, threadgroup barrier and simdgroup synchronisation
    unsigned clock, phase, group_phase, sg_phase[MAX_THREADS / MSL_SIMD_WIDTH];
} S;

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

// ---- errors --------------------------------------------------------------------------------------

static void fail(const char *fmt, ...) {
    msl_dispatch *d = S.d;
    if (S.failed) return;  // keep the first error
    S.failed = 1;
    char *buf = (char *)d->error;
    size_t len = d->error_len;
    int k = snprintf(buf, len, "threadgroup (%u,%u,%u): ", S.group[0], S.group[1], S.group[2]);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < len) vsnprintf(buf + k, len - k, fmt, ap);
    va_end(ap);
}

// "threads 0-15, 17" for the fibers of the group that satisfy pred
static void thread_list(char *buf, size_t len, int (*pred)(const fiber *, const void *), const void *arg) {
    size_t k = 0;
    unsigned n = S.fibers[0].pos.tcount;
    buf[0] = 0;
    for (unsigned i = 0; i < n && k + 24 < len; ++i) {
        if (!pred(&S.fibers[i], arg)) continue;
        unsigned j = i;
        while (j + 1 < n && pred(&S.fibers[j + 1], arg)) ++j;
        k += snprintf(buf + k, len - k, j > i ? "%s%u-%u" : "%s%u", k ? ", " : "", i, j);
        i = j;
    }
    if (k + 24 >= len) snprintf(buf + k, len - k, ", ...");
}

static int same_site(const fiber *a, const fiber *b) {
    return a->state == b->state && a->line == b->line && a->col == b->col &&
           (a->what == b->what || strcmp(a->what, b->what) == 0) &&
           (a->file == b->file || strcmp(a->file, b->file) == 0);
}
static int is_done(const fiber *f, const void *arg) { (void)arg; return f->state == DONE; }
static int at_site(const fiber *f, const void *arg) { return f->state != DONE && same_site(f, arg); }
static int in_simdgroup_at_site(const fiber *f, const void *arg) {
    const fiber *ref = arg;
    return f->pos.tidx / MSL_SIMD_WIDTH == ref->pos.tidx / MSL_SIMD_WIDTH && at_site(f, arg);
}

// ---- fibers --------------------------------------------------------------------------------------

// Saves the callee-saved registers and the stack pointer in *save, continues at `to`.
__attribute__((naked, noinline)) static void switch_to(void **save, void *to) {
    __asm__ volatile(
        "pushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n\t"
        "movq %rsp, (%rdi)\n\tmovq %rsi, %rsp\n\t"
        "popq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n\tret\n\t");
}

static void fiber_main(void) {
    fiber *f = S.cur;
    S.d->per_thread(S.d, &f->pos);
    f->state = DONE;
    switch_to(&f->sp, S.main_sp);
    __builtin_unreachable();
}

static void yield(void) { switch_to(&S.cur->sp, S.main_sp); }

// Stacks for the first n threads of a group, kept between launches and grown on demand: each stack has a
// guard page (two memory mappings), so a pool sized for MAX_THREADS in every loaded library would exhaust
// the process's mapping limit (vm.max_map_count) in a test session that loads many kernel files.
static int ensure_stacks(unsigned n) {
    if (S.stacks && S.n_stacks >= n) return 0;
    size_t slot = STACK_BYTES + page_size();
    if (S.stacks) munmap(S.stacks, slot * S.n_stacks);
    S.stacks = NULL;
    S.n_stacks = 0;
    char *m = mmap(NULL, slot * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return -1;
    for (unsigned i = 0; i < n; ++i) mprotect(m + i * slot, page_size(), PROT_NONE);
    if (!S.fibers) {
        S.fibers = mmap(NULL, sizeof(fiber) * MAX_THREADS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
        if (S.fibers == MAP_FAILED) {
            S.fibers = NULL;
            munmap(m, slot * n);
            return -1;
        }
    }
    for (unsigned i = 0; i < n; ++i) S.fibers[i].stack = m + i * slot + page_size();
    S.stacks = m;
    S.n_stacks = n;
    return 0;
}

static void start_fiber(fiber *f) {
    uintptr_t top = ((uintptr_t)f->stack + STACK_BYTES) & ~(uintptr_t)15;
    uintptr_t *ret = (uintptr_t *)(top - 16);  // after the 6 pops and `ret`, rsp = top - 8 as after a call
    ret[0] = (uintptr_t)fiber_main;
    ret[1] = 0;
    void **sp = (void **)ret - 6;
    for (int i = 0; i < 6; ++i) sp[i] = 0;
    f->sp = sp;
    f->state = RUNNABLE;
}

// ---- threadgroup memory --------------------------------------------------------------------------

static region *find_region(unsigned id) {
    for (unsigned i = 0; i < S.nregions; ++i)
        if (S.regions[i].id == id) return &S.regions[i];
    return NULL;
}

static region *new_region(unsigned id, unsigned long size, unsigned long align, const char *name, const char *file,
                          unsigned line) {
    if (S.nregions == MAX_REGIONS) {
        fail("more than %d threadgroup memory regions", MAX_REGIONS);
        return NULL;
    }
    if (S.tg_total + size > TG_LIMIT) {
        fail("threadgroup memory '%s' (%lu bytes) at %s:%u brings the total to %lu bytes, over Metal's limit "
             "of %d bytes", name, size, file, line, S.tg_total + size, TG_LIMIT);
        return NULL;
    }
    size_t pg = page_size(), body = (size + pg - 1) / pg * pg;
    if (body == 0) body = pg;
    char *m = mmap(NULL, body + 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        fail("mmap of threadgroup memory failed");
        return NULL;
    }
    mprotect(m, pg, PROT_NONE);
    mprotect(m + pg + body, pg, PROT_NONE);
    if (align < 16) align = 16;  // Metal aligns threadgroup allocations to 16 bytes
    region *r = &S.regions[S.nregions++];
    r->id = id;
    r->size = size;
    r->name = name;
    r->file = file;
    r->line = line;
    r->map = m;
    r->map_len = body + 2 * pg;
    // flush against the upper guard page where the alignment allows it
    r->data = (char *)(((uintptr_t)(m + pg + body - size)) & ~(uintptr_t)(align - 1));
    memset(m + pg, (int)S.d->poison, body);
    r->shadow = mmap(NULL, sizeof(shadow) * (size ? size : 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);  // zero: never accessed (phase 0 is before any group)
    S.tg_total += size;
    return r;
}

static void free_regions(void) {
    for (unsigned i = 0; i < S.nregions; ++i) {
        munmap(S.regions[i].map, S.regions[i].map_len);
        munmap(S.regions[i].shadow, sizeof(shadow) * (S.regions[i].size ? S.regions[i].size : 1));
    }
    S.nregions = 0;
    S.tg_total = 0;
}

static void fail_in_fiber(void) {
    // the error is recorded; abandon the group (its fibers are re-initialised by the next launch)
    yield();
    __builtin_unreachable();
}

void *msl_tg_alloc(unsigned id, unsigned long size, unsigned long align, const char *name, const char *file,
                   unsigned line) {
    if (!S.cur) longjmp(S.serial_bail, 1);
    region *r = find_region(id);
    if (!r && !(r = new_region(id, size, align, name, file, line))) fail_in_fiber();
    return r->data;
}

void *msl_tg_param(unsigned index) {
    if (!S.cur) longjmp(S.serial_bail, 1);
    region *r = find_region(PARAM_ID_BASE + index);
    return r ? r->data : NULL;
}

// Called before every load and store through a threadgroup pointer (harness/instrument.py): bounds, and
// data races: another thread's access to the same byte since the last barrier that orders the two
// (a threadgroup barrier; for two lanes of one simdgroup also a simdgroup barrier or collective).
// Sites are reported as @site(n), which the Python side turns into file:line.
static int ordered(unsigned other, unsigned other_phase, unsigned other_sg, unsigned t) {
    if (other_phase != S.phase || other == t) return 1;
    if (other == MANY) return 0;
    return other / MSL_SIMD_WIDTH == t / MSL_SIMD_WIDTH && other_sg != S.sg_phase[t / MSL_SIMD_WIDTH];
}

void msl_tg_access(void *ptr, unsigned long size, unsigned write, unsigned site) {
    if (!S.cur || S.failed) return;
    const char *p = ptr;
    const unsigned t = S.cur->pos.tidx, q = S.sg_phase[t / MSL_SIMD_WIDTH];
    region *r = NULL;
    for (unsigned i = 0; i < S.nregions && !r; ++i)
        if (p + size > S.regions[i].map && p < S.regions[i].map + S.regions[i].map_len) r = &S.regions[i];
    if (!r || p < r->data || p + size > r->data + r->size) {
        if (r)
            fail("thread %u %s %lu bytes at byte offset %ld of threadgroup memory '%s' (%lu bytes, %s:%u): out of "
                 "bounds at @site(%u)", t, write ? "writes" : "reads", size, (long)(p - r->data), r->name, r->size,
                 r->file, r->line, site);
        else
            fail("thread %u %s %lu bytes at %p, outside threadgroup memory, at @site(%u)", t,
                 write ? "writes" : "reads", size, ptr, site);
        fail_in_fiber();
    }
    for (unsigned long k = 0; k < size; ++k) {
        const unsigned long off = (unsigned long)(p - r->data) + k;
        shadow *h = &r->shadow[off];
        if (!ordered(h->writer, h->w_phase, h->w_sg, t)) {
            fail("data race on threadgroup memory '%s' (%s:%u) at byte offset %lu: thread %u %s it at @site(%u), "
                 "thread %u wrote it at @site(%u), with no barrier in between", r->name, r->file, r->line, off, t,
                 write ? "writes" : "reads", site, h->writer, h->w_site);
            fail_in_fiber();
        }
        if (write) {
            if (!ordered(h->reader, h->r_phase, h->r_sg, t)) {
                char who[32];
                snprintf(who, sizeof who, h->reader == MANY ? "other threads" : "thread %u", h->reader);
                fail("data race on threadgroup memory '%s' (%s:%u) at byte offset %lu: thread %u writes it at "
                     "@site(%u), %s read it (last at @site(%u)), with no barrier in between", r->name, r->file,
                     r->line, off, t, site, who, h->r_site);
                fail_in_fiber();
            }
            h->writer = (unsigned short)t, h->w_phase = S.phase, h->w_sg = q, h->w_site = site;
        } else {
            if (S.d->check_uninitialized && h->w_phase < S.group_phase) {
                fail("thread %u reads byte offset %lu of threadgroup memory '%s' (%s:%u) at @site(%u), which no "
                     "thread of the group has written", t, off, r->name, r->file, r->line, site);
                fail_in_fiber();
            }
            if (h->r_phase == S.phase && h->reader != t) {
                h->reader = MANY;
            } else {
                h->reader = (unsigned short)t, h->r_phase = S.phase;
            }
            h->r_sg = q, h->r_site = site;
        }
    }
}

// ---- synchronisation -----------------------------------------------------------------------------

static void wait_at(unsigned state, const char *what, const char *file, unsigned line, unsigned col) {
    if (!S.cur) longjmp(S.serial_bail, 1);
    fiber *f = S.cur;
    f->state = state;
    f->what = what;
    f->file = file;
    f->line = line;
    f->col = col;
    yield();
    if (S.failed) fail_in_fiber();
}

void msl_barrier(unsigned simdgroup_scope, const char *what, const char *file, unsigned line, unsigned col) {
    if (S.cur) S.cur->resolve = NULL;
    wait_at(simdgroup_scope ? AT_COLLECTIVE : AT_BARRIER, what, file, line, col);
}

void msl_collective(msl_resolver resolve, void *in, void *in2, void *out, unsigned arg, unsigned arg2,
                    const char *what, const char *file, unsigned line, unsigned col) {
    if (S.cur) {
        fiber *f = S.cur;
        f->resolve = resolve;
        f->in = in;
        f->in2 = in2;
        f->out = out;
        f->arg = arg;
        f->arg2 = arg2;
    }
    wait_at(AT_COLLECTIVE, what, file, line, col);
}

unsigned msl_lane(void) {
    if (!S.cur) longjmp(S.serial_bail, 1);
    return S.cur->pos.tidx % MSL_SIMD_WIDTH;
}

// Every live lane of the simdgroup starting at `base` waits at a collective: check that it is one call
// site, then resolve it. Returns 1 if released, -1 on error.
static int resolve_simdgroup(unsigned base, unsigned n) {
    fiber *lanes = S.fibers + base, *first = NULL;
    unsigned long active = 0;
    for (unsigned i = 0; i < n; ++i) {
        if (lanes[i].state == DONE) continue;
        if (lanes[i].state != AT_COLLECTIVE) return 0;
        active |= 1ul << i;
        if (!first) first = &lanes[i];
    }
    if (!first) return 0;
    for (unsigned i = 0; i < n; ++i) {
        if (lanes[i].state == DONE || (same_site(&lanes[i], first) && lanes[i].resolve == first->resolve)) continue;
        char a[256], b[256];
        thread_list(a, sizeof a, in_simdgroup_at_site, first);
        thread_list(b, sizeof b, in_simdgroup_at_site, &lanes[i]);
        fail("simdgroup %u diverges: threads %s wait at %s (%s:%u) but threads %s at %s (%s:%u)", base / 32, a,
             first->what, first->file, first->line, b, lanes[i].what, lanes[i].file, lanes[i].line);
        return -1;
    }
    if (first->resolve) {
        msl_lanes L;
        memset(&L, 0, sizeof L);
        L.n = n;
        L.order = S.d->simd_order;
        L.mma_order = S.d->mma_order;
        L.active = active;
        for (unsigned i = 0; i < n; ++i) {
            L.in[i] = lanes[i].in;
            L.in2[i] = lanes[i].in2;
            L.out[i] = lanes[i].out;
            L.arg[i] = lanes[i].arg;
            L.arg2[i] = lanes[i].arg2;
        }
        if (first->resolve(&L)) {
            const char *why = L.bad_src >= n ? "which does not exist in this simdgroup" : "which has returned";
            fail("%s at %s:%u: thread %u reads lane %u, %s (inactive lanes have no value)", first->what,
                 first->file, first->line, base + L.bad_lane, L.bad_src, why);
            return -1;
        }
    }
    for (unsigned i = 0; i < n; ++i)
        if (lanes[i].state != DONE) lanes[i].state = RUNNABLE;
    S.sg_phase[base / MSL_SIMD_WIDTH] = ++S.clock;
    return 1;
}

static void new_phase(void) {
    S.phase = ++S.clock;
    for (unsigned i = 0; i < MAX_THREADS / MSL_SIMD_WIDTH; ++i) S.sg_phase[i] = ++S.clock;
}

// Nothing can run: release a SIMD-group collective or the threadgroup barrier, or report why not.
static int resolve(unsigned tcount) {
    int progress = 0;
    for (unsigned base = 0; base < tcount; base += MSL_SIMD_WIDTH) {
        unsigned n = tcount - base < MSL_SIMD_WIDTH ? tcount - base : MSL_SIMD_WIDTH;
        int r = resolve_simdgroup(base, n);
        if (r < 0) return -1;
        progress |= r;
    }
    if (progress) return 1;
    fiber *first = NULL, *other = NULL;
    unsigned done = 0;
    for (unsigned i = 0; i < tcount; ++i) {
        fiber *f = &S.fibers[i];
        if (f->state == DONE) {
            ++done;
        } else if (!first) {
            first = f;
        } else if (!other && !same_site(f, first)) {
            other = f;
        }
    }
    if (!first) return 0;
    char a[256], b[256];
    thread_list(a, sizeof a, at_site, first);
    if (other) {
        thread_list(b, sizeof b, at_site, other);
        fail("threads wait at different synchronisation points: threads %s at %s (%s:%u), threads %s at %s "
             "(%s:%u)", a, first->what, first->file, first->line, b, other->what, other->file, other->line);
        return -1;
    }
    if (first->state != AT_BARRIER) {
        // lanes of one simdgroup at a collective that cannot resolve (cannot happen: resolved above)
        fail("threads %s are stuck at %s (%s:%u)", a, first->what, first->file, first->line);
        return -1;
    }
    if (done) {
        thread_list(b, sizeof b, is_done, NULL);
        fail("threads %s returned while threads %s wait at threadgroup_barrier (%s:%u); every thread of the "
             "group must reach each barrier", b, a, first->file, first->line);
        return -1;
    }
    for (unsigned i = 0; i < tcount; ++i) S.fibers[i].state = RUNNABLE;
    new_phase();
    return 1;
}

static unsigned long next_random(unsigned long *s) {
    unsigned long x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int run_group_fibers(const unsigned tg[3], const unsigned tsz[3]) {
    unsigned tcount = tsz[0] * tsz[1] * tsz[2];
    unsigned order[MAX_THREADS];
    for (unsigned i = 0; i < tcount; ++i) {
        fiber *f = &S.fibers[i];
        f->pos.tidx = i;
        f->pos.tcount = tcount;
        f->pos.tt[0] = i % tsz[0];
        f->pos.tt[1] = i / tsz[0] % tsz[1];
        f->pos.tt[2] = i / (tsz[0] * tsz[1]);
        for (int d = 0; d < 3; ++d) {
            f->pos.tg[d] = tg[d];
            f->pos.tsz[d] = tsz[d];
        }
        start_fiber(f);
        order[i] = S.d->schedule == MSL_REVERSE ? tcount - 1 - i : i;
    }
    for (unsigned i = 0; i < S.nregions; ++i) memset(S.regions[i].data, (int)S.d->poison, S.regions[i].size);
    new_phase();
    S.group_phase = S.phase;
    unsigned long rng = S.d->seed * 0x9E3779B97F4A7C15ul + (tg[0] + 1) * 0x632BE59BD9B4E019ul + tg[1] * 31 + tg[2];
    if (!rng) rng = 1;
    for (;;) {
        if (S.d->schedule == MSL_RANDOM)
            for (unsigned i = tcount - 1; i > 0; --i) {
                unsigned j = (unsigned)(next_random(&rng) % (i + 1)), t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        for (unsigned k = 0; k < tcount; ++k) {
            fiber *f = &S.fibers[order[k]];
            if (f->state != RUNNABLE) continue;
            S.cur = f;
            switch_to(&S.main_sp, f->sp);
            S.cur = NULL;
            if (S.failed) return -1;
        }
        int r = resolve(tcount);
        if (r < 0) return -1;
        if (r == 0) return 0;
    }
}

// ---- faults in fibers (out-of-bounds threadgroup or device accesses, stack overflow) --------------

static struct sigaction old_segv, old_bus;
static stack_t old_altstack;  // Python's faulthandler has one: put it back after the launch

static void on_fault(int sig, siginfo_t *info, void *uctx) {
    if (!S.cur || S.failed) {
        sigaction(SIGSEGV, &old_segv, NULL);  // not ours: let the previous handler report it
        sigaction(SIGBUS, &old_bus, NULL);
        return;
    }
    char *addr = info->si_addr;
    ucontext_t *uc = uctx;
    void *pc = (void *)uc->uc_mcontext.gregs[REG_RIP];
    Dl_info dl;
    unsigned long off = 0;
    const char *obj = "?";
    if (dladdr(pc, &dl) && dl.dli_fbase) {
        off = (unsigned long)((char *)pc - (char *)dl.dli_fbase);
        obj = dl.dli_fname;
    }
    char where[160] = "";
    for (unsigned i = 0; i < S.nregions; ++i) {
        region *r = &S.regions[i];
        if (addr >= r->map && addr < r->map + r->map_len) {
            long rel = addr - r->data;
            snprintf(where, sizeof where, "threadgroup memory '%s' (%lu bytes, %s:%u) accessed at byte offset %ld",
                     r->name, r->size, r->file, r->line, rel);
        }
    }
    unsigned slot = STACK_BYTES + page_size();
    if (!where[0] && addr >= S.stacks && addr < S.stacks + (size_t)slot * S.n_stacks &&
        (size_t)(addr - S.stacks) % slot < page_size())
        snprintf(where, sizeof where, "stack overflow (a thread's stack is %d KiB)", STACK_BYTES / 1024);
    if (!where[0]) snprintf(where, sizeof where, "invalid address %p (a device buffer out of bounds?)", addr);
    fail("thread %u: %s %s [pc %s+0x%lx]", S.cur->pos.tidx, sig == SIGBUS ? "bus error:" : "out-of-bounds access:",
         where, obj, off);
    switch_to(&S.cur->sp, S.main_sp);  // abandon the fiber; SA_NODEFER leaves the signal unblocked
}

static void guard_faults(int on) {
    if (on) {
        if (!S.altstack) {
            S.altstack = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        }
        stack_t ss = {.ss_sp = S.altstack, .ss_size = 1 << 16, .ss_flags = 0};
        sigaltstack(&ss, &old_altstack);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv);
        sigaction(SIGBUS, &sa, &old_bus);
    } else {
        sigaction(SIGSEGV, &old_segv, NULL);
        sigaction(SIGBUS, &old_bus, NULL);
        sigaltstack(&old_altstack, NULL);
    }
}

#include "trace.c"

// ---- launches ------------------------------------------------------------------------------------

static void group_size(const msl_dispatch *d, const unsigned tg[3], unsigned tsz[3]) {
    for (int k = 0; k < 3; ++k) {
        unsigned left = d->grid[k] - tg[k] * d->tdecl[k];
        tsz[k] = left < d->tdecl[k] ? left : d->tdecl[k];
    }
}

static int run_serial(msl_dispatch *d) {
    d->serial(d);  // the generated loop over groups and threads, with the kernel inlined
    return MSL_OK;
}

static int run_fibers(msl_dispatch *d) {
    if (ensure_stacks(d->tdecl[0] * d->tdecl[1] * d->tdecl[2])) {
        fail("cannot map the fiber stacks");
        return MSL_ERROR;
    }
    for (unsigned i = 0; i < MSL_MAX_TG_PARAMS; ++i)
        if (d->tg_param_size[i] && !new_region(PARAM_ID_BASE + i, d->tg_param_size[i], 16, "[[threadgroup]] buffer",
                                               "the launch", i))
            return MSL_ERROR;
    if (d->trace && trace_begin(d)) {
        fail("trace: out of memory");
        return MSL_ERROR;
    }
    guard_faults(1);
    int rc = MSL_OK;
    unsigned tg[3], tsz[3];
    const unsigned *list = (const unsigned *)d->group_list;
    unsigned long count = d->n_group_list ? d->n_group_list
                                          : (unsigned long)d->ngroups[0] * d->ngroups[1] * d->ngroups[2];
    for (unsigned long i = 0; i < count && rc == MSL_OK; ++i) {
        unsigned long g = d->n_group_list ? list[i] : i;  // linear: x fastest
        tg[0] = (unsigned)(g % d->ngroups[0]);
        tg[1] = (unsigned)(g / d->ngroups[0] % d->ngroups[1]);
        tg[2] = (unsigned)(g / ((unsigned long)d->ngroups[0] * d->ngroups[1]));
        memcpy(S.group, tg, sizeof tg);
        group_size(d, tg, tsz);
        if (d->trace) T.ordinal = (unsigned)(i + 1);
        if (run_group_fibers(tg, tsz)) rc = MSL_ERROR;
        else if (d->trace) trace_group_end(tsz[0] * tsz[1] * tsz[2]);
    }
    guard_faults(0);
    if (d->trace) trace_end();
    return rc;
}

int msl_run(msl_dispatch *d) {
    memset(S.group, 0, sizeof S.group);
    S.d = d;
    S.failed = 0;
    S.cur = NULL;
    int rc;
    if (d->mode != MSL_FIBERS) {
        if (setjmp(S.serial_bail) == 0) {
            rc = run_serial(d);
        } else {
            rc = d->mode == MSL_SERIAL ? MSL_ERROR : MSL_NEEDS_FIBERS;
            if (rc == MSL_ERROR) fail("the kernel synchronises, which the serial mode cannot run");
        }
    } else {
        rc = run_fibers(d);
        if (S.failed) rc = MSL_ERROR;
    }
    free_regions();
    S.d = NULL;
    return rc;
}
