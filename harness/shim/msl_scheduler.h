// Interface between the generated launchers and shim (C++ for OpenCL) and the scheduler (C,
// harness/runtime/scheduler.c). Plain data only, so that both languages lay it out alike (harness/scheduler.py mirrors
// msl_dispatch with ctypes).
#pragma once

#ifdef __OPENCL_CPP_VERSION__
#define MSL_STR const __constant char *
#define MSL_EXTERN extern "C"
#else
#define MSL_STR const char *
#define MSL_EXTERN
#endif

#define MSL_SIMD_WIDTH 32
#define MSL_MAX_TG_PARAMS 31

// msl_dispatch.schedule: the order in which runnable threads of a group run between synchronisations
enum { MSL_FORWARD = 0, MSL_REVERSE = 1, MSL_RANDOM = 2 };
// msl_lanes.order: how simd_sum and friends combine the lanes' values
enum { MSL_BUTTERFLY = 0, MSL_ADJACENT = 1, MSL_SEQUENTIAL = 2 };
// msl_lanes.mma_order: how simdgroup_multiply_accumulate sums a row-column product into C
enum { MSL_MMA_FMA = 0, MSL_MMA_SEQUENTIAL = 1, MSL_MMA_PAIRWISE = 2 };
// msl_dispatch.mode
enum { MSL_AUTO = 0, MSL_SERIAL = 1, MSL_FIBERS = 2 };
// msl_run results
enum { MSL_OK = 0, MSL_ERROR = 1, MSL_NEEDS_FIBERS = 2 };

typedef struct msl_pos {
    unsigned tg[3];    // threadgroup_position_in_grid
    unsigned tt[3];    // thread_position_in_threadgroup
    unsigned tsz[3];   // threads_per_threadgroup (smaller in a partial last group)
    unsigned tidx;     // thread_index_in_threadgroup
    unsigned tcount;   // threads in this group
} msl_pos;

// One SIMD-group collective, handed to its resolver once every live lane waits at it.
typedef struct msl_lanes {
    unsigned n;                   // lanes of this simdgroup (fewer than 32 in a small group)
    unsigned order;               // MSL_BUTTERFLY, ...
    unsigned mma_order;           // MSL_MMA_FMA, ...
    unsigned bad_lane, bad_src;   // set by a resolver that returns nonzero (a read from an inactive lane)
    unsigned long active;         // bit i: lane i has not returned
    void *in[MSL_SIMD_WIDTH];
    void *in2[MSL_SIMD_WIDTH];
    void *out[MSL_SIMD_WIDTH];
    unsigned arg[MSL_SIMD_WIDTH];
    unsigned arg2[MSL_SIMD_WIDTH];
} msl_lanes;

typedef struct msl_dispatch msl_dispatch;
typedef int (*msl_resolver)(msl_lanes *);
typedef void (*msl_thread_fn)(const msl_dispatch *, const msl_pos *);
typedef void (*msl_serial_fn)(const msl_dispatch *);

struct msl_dispatch {
    unsigned ngroups[3], tdecl[3], grid[3];
    unsigned schedule, simd_order, mma_order, mode, poison;
    unsigned check_uninitialized;                    // a read of threadgroup memory no thread wrote is an error
    unsigned long seed;
    unsigned long bufs;                              // address of the buffer address table
    unsigned long tg_param_size[MSL_MAX_TG_PARAMS];  // [[threadgroup(n)]] bytes, 0 = not bound
    unsigned long error;                             // char buffer for the error message
    unsigned long error_len;
    msl_thread_fn per_thread;                        // set by the generated launcher: one thread (fibers)
    msl_serial_fn serial;                            // and every thread of the grid in turn (serial mode)
    unsigned long trace;                             // msl_trace * (trace builds, harness/trace.py), 0 = off
    unsigned long group_list;                        // unsigned[]: linear indices of the groups to run, in order
    unsigned long n_group_list;                      // 0 = every group of the grid
};

MSL_EXTERN int msl_run(msl_dispatch *d);
MSL_EXTERN void msl_barrier(unsigned simdgroup_scope, MSL_STR what, MSL_STR file, unsigned line, unsigned col);
MSL_EXTERN void msl_collective(msl_resolver resolve, void *in, void *in2, void *out, unsigned arg, unsigned arg2,
                               MSL_STR what, MSL_STR file, unsigned line, unsigned col);
MSL_EXTERN unsigned msl_lane(void);
MSL_EXTERN void *msl_tg_alloc(unsigned id, unsigned long size, unsigned long align, MSL_STR name, MSL_STR file,
                              unsigned line);
MSL_EXTERN void *msl_tg_param(unsigned index);
// called by the instrumented IR (harness/instrument.py) before each threadgroup load/store
MSL_EXTERN void msl_tg_access(void *p, unsigned long size, unsigned write, unsigned site);

// ---- trace builds (harness/trace.py instruments the IR; harness/runtime/trace.c records) --------------
#define MSL_TRACE_MAX_BUFS 32
// msl_trace.site_stats fields per access site
enum { MSL_TS_INSTANCES, MSL_TS_LINES, MSL_TS_SECTORS, MSL_TS_BYTES_USED, MSL_TS_LANE_BYTES, MSL_TS_LANE_ACCESSES,
       MSL_TS_SPACES, MSL_TS_FIELDS };
// spaces (bits of MSL_TS_SPACES)
enum { MSL_SPACE_DEVICE = 0, MSL_SPACE_CONSTANT = 1, MSL_SPACE_THREADGROUP = 2 };
typedef struct msl_trace {
    unsigned n_sites, n_blocks, n_bufs, tg_bytes;  // tg_bytes: threadgroup memory of a group (set by the runtime)
    unsigned long buf_addr[MSL_TRACE_MAX_BUFS], buf_size[MSL_TRACE_MAX_BUFS];
    unsigned long site_stats;                         // unsigned long[n_sites][MSL_TS_FIELDS], accumulated
    unsigned long block_simd;                         // unsigned long[n_blocks]: per simdgroup, the most runs by a lane
    unsigned long block_lane;                         // unsigned long[n_blocks]: runs summed over lanes
    unsigned long unique[MSL_TRACE_MAX_BUFS][2][2];   // device bytes [buffer][read, write][one group, several]
    unsigned long groups, simdgroups, lanes;          // traced
} msl_trace;
MSL_EXTERN void msl_trace_mem(unsigned long addr, unsigned long size, unsigned write_space, unsigned site);
MSL_EXTERN void msl_trace_block(unsigned id);
