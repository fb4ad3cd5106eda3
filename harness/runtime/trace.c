// Trace builds (harness/trace.py): the instrumented IR calls msl_trace_mem before every device, constant and
// threadgroup load or store, and msl_trace_block at the top of every basic block. Included by scheduler.c,
// whose state (the running fiber, the threadgroup regions) it reads. Traced launches run on fibers only.
//
// Per threadgroup, each thread's accesses are recorded as (site, k, address, size): the k-th execution of
// the static access `site` by that thread. When the group ends, the records of each simdgroup are matched
// across lanes by (site, k): one SIMD memory instruction, whose distinct 128-byte lines, 32-byte sectors
// and used bytes (the union of the lanes' bytes) are added to the site's totals. Device bytes are also
// marked per buffer with the (traced) group that touched them, so the unique bytes a launch moves split
// into bytes one group touched and bytes several groups shared (harness/trace.py extrapolates the first
// when only some groups are traced). Block counts give, per simdgroup, the most runs of a block by any lane
// (what the SIMD issues) and the runs summed over lanes.

typedef struct trace_rec {
    unsigned site, k;
    unsigned long addr, size;
    unsigned lane;
} trace_rec;

static struct {
    msl_trace *t;
    trace_rec *recs[MAX_THREADS];
    size_t n[MAX_THREADS], cap[MAX_THREADS];
    unsigned *kcount;          // [MAX_THREADS][n_sites]: executions so far of each site by each thread
    unsigned *bcount;          // [MAX_THREADS][n_blocks]
    unsigned short *owner[MSL_TRACE_MAX_BUFS][2];  // per device byte: traced group ordinal, 0xFFFF = several
    unsigned ordinal;          // 1-based ordinal of the traced group
    trace_rec *tmp;
    size_t tmp_cap;
} T;

#define OWNER_SHARED 0xFFFFu

static int trace_begin(msl_dispatch *d) {
    T.t = (msl_trace *)d->trace;
    T.ordinal = 0;
    T.kcount = calloc((size_t)MAX_THREADS * (T.t->n_sites ? T.t->n_sites : 1), sizeof(unsigned));
    T.bcount = calloc((size_t)MAX_THREADS * (T.t->n_blocks ? T.t->n_blocks : 1), sizeof(unsigned));
    return T.kcount && T.bcount ? 0 : -1;
}

void msl_trace_mem(unsigned long addr, unsigned long size, unsigned write_space, unsigned site) {
    if (!S.cur || !T.t || size == 0) return;
    unsigned write = write_space & 1, ir_space = write_space >> 1, space;
    int buf = -1;
    for (unsigned i = 0; i < T.t->n_bufs; ++i)
        if (addr >= T.t->buf_addr[i] && addr < T.t->buf_addr[i] + T.t->buf_size[i]) buf = (int)i;
    if (ir_space == 1) {
        space = MSL_SPACE_DEVICE;
    } else if (ir_space == 2) {
        space = MSL_SPACE_CONSTANT;
        buf = -1;  // argument buffers (setBytes) and program-scope tables: the constant cache, not DRAM
    } else if (ir_space == 3) {
        space = MSL_SPACE_THREADGROUP;
    } else {  // generic: where does it point?
        if (buf >= 0) {
            space = MSL_SPACE_DEVICE;
        } else {
            int tg = 0;
            for (unsigned i = 0; i < S.nregions; ++i)
                if ((char *)addr >= S.regions[i].data && (char *)addr < S.regions[i].data + S.regions[i].size) tg = 1;
            if (!tg) return;  // the thread's own stack: private memory
            space = MSL_SPACE_THREADGROUP;
        }
    }
    unsigned tid = S.cur->pos.tidx;
    if (space == MSL_SPACE_DEVICE && buf >= 0) {
        unsigned short **own = &T.owner[buf][write];
        if (!*own) *own = calloc(T.t->buf_size[buf], sizeof(unsigned short));
        if (*own) {
            unsigned long first = addr - T.t->buf_addr[buf], last = first + size;
            if (last > T.t->buf_size[buf]) last = T.t->buf_size[buf];
            for (unsigned long b = first; b < last; ++b) {
                unsigned short o = (*own)[b];
                if (o == 0) (*own)[b] = (unsigned short)T.ordinal;
                else if (o != T.ordinal) (*own)[b] = OWNER_SHARED;
            }
        }
    }
    unsigned long *st = (unsigned long *)T.t->site_stats + (size_t)site * MSL_TS_FIELDS;
    st[MSL_TS_SPACES] |= 1ul << space;
    if (T.n[tid] == T.cap[tid]) {
        size_t cap = T.cap[tid] ? T.cap[tid] * 2 : 256;
        trace_rec *r = realloc(T.recs[tid], cap * sizeof *r);
        if (!r) {
            fail("trace: out of memory");
            fail_in_fiber();
        }
        T.recs[tid] = r;
        T.cap[tid] = cap;
    }
    unsigned *kc = &T.kcount[(size_t)tid * T.t->n_sites + site];
    T.recs[tid][T.n[tid]++] = (trace_rec){site, (*kc)++, addr, size, tid % MSL_SIMD_WIDTH};
}

void msl_trace_block(unsigned id) {
    if (!S.cur || !T.t) return;
    T.bcount[(size_t)S.cur->pos.tidx * T.t->n_blocks + id]++;
}

static int rec_order(const void *pa, const void *pb) {
    const trace_rec *a = pa, *b = pb;
    if (a->site != b->site) return a->site < b->site ? -1 : 1;
    if (a->k != b->k) return a->k < b->k ? -1 : 1;
    if (a->addr != b->addr) return a->addr < b->addr ? -1 : 1;
    return a->size < b->size ? -1 : a->size > b->size;
}

// One SIMD memory instruction: records r[0 .. n-1], sorted by address.
static void trace_instance(const trace_rec *r, size_t n) {
    unsigned long *st = (unsigned long *)T.t->site_stats + (size_t)r[0].site * MSL_TS_FIELDS;
    unsigned long lines = 0, sectors = 0, used = 0, lane_bytes = 0;
    unsigned long next_line = 0, next_sector = 0, covered = 0;  // first line / sector / byte not yet counted
    for (size_t i = 0; i < n; ++i) {  // sorted by start address
        unsigned long a = r[i].addr, e = a + r[i].size;  // [a, e)
        lane_bytes += r[i].size;
        unsigned long l0 = a >> 7, l1 = ((e - 1) >> 7) + 1, s0 = a >> 5, s1 = ((e - 1) >> 5) + 1;
        if (i && l0 < next_line) l0 = next_line;
        if (l1 > l0) { lines += l1 - l0; next_line = l1; }
        if (i && s0 < next_sector) s0 = next_sector;
        if (s1 > s0) { sectors += s1 - s0; next_sector = s1; }
        unsigned long b0 = i && a < covered ? covered : a;
        if (e > b0) { used += e - b0; covered = e; }
    }
    st[MSL_TS_INSTANCES] += 1;
    st[MSL_TS_LINES] += lines;
    st[MSL_TS_SECTORS] += sectors;
    st[MSL_TS_BYTES_USED] += used;
    st[MSL_TS_LANE_BYTES] += lane_bytes;
    st[MSL_TS_LANE_ACCESSES] += n;
}

// The group has finished: match its records per simdgroup, fold its block counts, reset.
static void trace_group_end(unsigned tcount) {
    unsigned long *bs = (unsigned long *)T.t->block_simd, *bl = (unsigned long *)T.t->block_lane;
    for (unsigned base = 0; base < tcount; base += MSL_SIMD_WIDTH) {
        unsigned end = base + MSL_SIMD_WIDTH < tcount ? base + MSL_SIMD_WIDTH : tcount;
        size_t total = 0;
        for (unsigned t = base; t < end; ++t) total += T.n[t];
        if (total > T.tmp_cap) {
            free(T.tmp);
            T.tmp_cap = total * 2;
            T.tmp = malloc(T.tmp_cap * sizeof *T.tmp);
        }
        size_t m = 0;
        for (unsigned t = base; t < end; ++t) {
            for (size_t i = 0; i < T.n[t]; ++i) {
                T.kcount[(size_t)t * T.t->n_sites + T.recs[t][i].site] = 0;
                T.tmp[m++] = T.recs[t][i];
            }
            T.n[t] = 0;
        }
        qsort(T.tmp, m, sizeof *T.tmp, rec_order);
        for (size_t i = 0; i < m;) {
            size_t j = i + 1;
            while (j < m && T.tmp[j].site == T.tmp[i].site && T.tmp[j].k == T.tmp[i].k) ++j;
            trace_instance(T.tmp + i, j - i);
            i = j;
        }
        for (unsigned b = 0; b < T.t->n_blocks; ++b) {
            unsigned most = 0;
            unsigned long sum = 0;
            for (unsigned t = base; t < end; ++t) {
                unsigned c = T.bcount[(size_t)t * T.t->n_blocks + b];
                most = c > most ? c : most;
                sum += c;
                T.bcount[(size_t)t * T.t->n_blocks + b] = 0;
            }
            bs[b] += most;
            bl[b] += sum;
        }
        T.t->simdgroups += 1;
    }
    T.t->lanes += tcount;
    if (S.tg_total > T.t->tg_bytes) T.t->tg_bytes = (unsigned)S.tg_total;
    T.t->groups += 1;
}

static void trace_end(void) {
    for (unsigned i = 0; i < MSL_TRACE_MAX_BUFS; ++i)
        for (unsigned w = 0; w < 2; ++w) {
            unsigned short *own = T.owner[i][w];
            if (!own) continue;
            unsigned long one = 0, several = 0;
            for (unsigned long b = 0; b < T.t->buf_size[i]; ++b) {
                one += own[b] != 0 && own[b] != OWNER_SHARED;
                several += own[b] == OWNER_SHARED;
            }
            T.t->unique[i][w][0] = one;
            T.t->unique[i][w][1] = several;
            free(own);
            T.owner[i][w] = NULL;
        }
    for (unsigned i = 0; i < MAX_THREADS; ++i) {
        free(T.recs[i]);
        T.recs[i] = NULL;
        T.n[i] = T.cap[i] = 0;
    }
    free(T.kcount);
    free(T.bcount);
    free(T.tmp);
    T.kcount = T.bcount = NULL;
    T.tmp = NULL;
    T.tmp_cap = 0;
    T.t = NULL;
}
