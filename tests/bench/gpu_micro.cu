/*
 * gpu_micro.cu — the ceilings issue 16's GPU table is measured against: what one
 * GPU can gather, with no hash table in the way.
 *
 *  (a) gather ceiling: random rows (256 bytes by default: dim 64 float32) gathered
 *      warp-cooperatively from a large device array into a dense output array,
 *      as the table's find moves rows once it knows where they are; next to
 *      cudaMemcpy device-to-device bandwidth, measured in the same run.
 *  (b) host rows: the same gather reading rows from pinned host memory mapped
 *      into the device's address space (the hybrid table's host rows), in
 *      random order and sorted by address, on memory backed by 4 KiB pages and
 *      on memory advised to 2 MiB huge pages, and on cudaHostAlloc's memory (what
 *      cuda/detail/gpu_table_create.cu allocates for host rows).
 *
 * Each kernel copies the rows of 32 indices per warp: every lane reads one index,
 * then the warp moves the 32 rows with 16-byte loads, U rows' loads issued before
 * their stores (U = 1 and 4 are both run: how much do loads in flight buy), and
 * streaming stores for the output. Timed with CUDA events around one launch of
 * `--batch` rows; median (and min/max) of `--reps` after one warm-up launch.
 *
 * Units: rows/s in billions of 2^30 (HierarchicalKV's keys/s), GB/s = 10^9 B/s.
 * For (a), GB/s counts bytes read + written (as cudaMemcpy's figure does); for (b)
 * it counts the row bytes read across the bus (what PCIe limits).
 *
 * Huge pages, what this program controls and what it does not: it allocates host
 * memory with mmap, aligned to 2 MiB, and calls madvise(MADV_HUGEPAGE) (or
 * MADV_NOHUGEPAGE for the 4 KiB case) before touching it and before
 * cudaHostRegister. Whether the kernel then backs it with transparent huge pages
 * depends on /sys/kernel/mm/transparent_hugepage/enabled ("never" refuses) and
 * on free contiguous memory; the program reads back AnonHugePages of the range
 * from /proc/self/smaps and prints it, so a run says what it got. How the GPU
 * and the IOMMU then map the pinned pages (their page sizes for system memory)
 * is the driver's choice and is not visible here.
 *
 * Exits 77 where no CUDA device is usable (ctest: skipped). Never asserts on a
 * duration: the check is that every gathered row is the row asked for.
 *
 *   gpu_micro [--quick] [--device-gib G] [--host-gib G] [--batch N] [--row-bytes B]
 *             [--reps R] [--csv FILE] [--only device|host]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <algorithm>
#include <initializer_list>
#include <vector>

#include <cuda_runtime_api.h>

#define WARP 32u
#define BLOCK 256u
#define MIB (size_t(1) << 20)
#define GIB (size_t(1) << 30)
#define HUGE_2M (2 * MIB)

#define CK(call)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "gpu_micro: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,          \
                    cudaGetErrorName(e_));                                                    \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

struct opts {
    double device_gib = 4.0, host_gib = 4.0;
    size_t batch = 1 << 20, row_bytes = 256;
    int reps = 5, quick = 0;
    const char *csv = NULL, *only = NULL;
};

/* ---- kernels ---------------------------------------------------------------------- */

/* idx[i] = a random row below `rows` (splitmix64's finaliser over i + seed). */
__global__ void k_random_idx(uint64_t *idx, size_t n, uint64_t rows, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = i + seed * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        idx[i] = __umul64hi(z, rows);
    }
}

/* Row r holds (float)r in its first element and r + j in element j: a gathered
 * row names itself. */
__global__ void k_fill_rows(float *rows, uint64_t nrows, uint32_t row_floats)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nrows * row_floats;
         i += (size_t)gridDim.x * blockDim.x)
        rows[i] = (float)((i / row_floats) % 16777216u) + (float)(i % row_floats);
}

/* out[i] = rows[idx[i]], a warp per 32 indices, rows of `cols` float4s. The
 * warp's indices go through shared memory, so that lanes whose share of a row
 * ends early need not meet the others in a shuffle. */
template <unsigned U>
__global__ void __launch_bounds__(BLOCK) k_gather(const float4 *rows, uint32_t cols,
                                                  const uint64_t *idx, size_t n, float4 *out)
{
    __shared__ uint64_t sh[BLOCK];
    unsigned lane = threadIdx.x & (WARP - 1u);
    uint64_t *wi = sh + (threadIdx.x & ~(WARP - 1u));
    uint32_t width = cols < WARP ? cols : WARP, rpp = WARP / width;
    uint32_t sub = lane / width, col0 = lane % width;
    size_t step = (size_t)gridDim.x * BLOCK;
    for (size_t first = (size_t)blockIdx.x * BLOCK + (threadIdx.x & ~(WARP - 1u)); first < n;
         first += step) {
        size_t i = first + lane;
        wi[lane] = i < n ? __ldcs(idx + i) : 0;
        __syncwarp();
        uint32_t nr = n - first < WARP ? (uint32_t)(n - first) : WARP;
        for (uint32_t c = col0; sub < rpp && c < cols; c += width) {
            for (uint32_t r0 = sub; r0 < nr; r0 += U * rpp) {
                float4 x[U];
#pragma unroll
                for (unsigned u = 0; u < U; u++) {
                    uint32_t r = r0 + u * rpp;
                    if (r < nr)
                        x[u] = __ldcg(rows + wi[r] * cols + c);
                }
#pragma unroll
                for (unsigned u = 0; u < U; u++) {
                    uint32_t r = r0 + u * rpp;
                    if (r < nr)
                        __stcs(out + (first + r) * cols + c, x[u]);
                }
            }
        }
        __syncwarp();
    }
}

/* ---- helpers ----------------------------------------------------------------------- */

/* Launches k_gather with U = u (1 or 4). */
static void gather(unsigned u, unsigned grid, const float4 *rows, uint32_t cols,
                   const uint64_t *idx, size_t n, float4 *out)
{
    if (u == 4)
        k_gather<4><<<grid, BLOCK>>>(rows, cols, idx, n, out);
    else
        k_gather<1><<<grid, BLOCK>>>(rows, cols, idx, n, out);
}

static unsigned grid_of(int sms, size_t n)
{
    size_t want = (n + BLOCK - 1) / BLOCK, cap = (size_t)sms * 8u;
    return (unsigned)(want < cap ? (want ? want : 1) : cap);
}

struct stats3 {
    double min, med, max;
};

static stats3 summarize(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    stats3 s = {v.front(), v[v.size() / 2], v.back()};
    return s;
}

/* Seconds of one launch of `fn`, reps times after one warm-up. */
template <class F>
static stats3 time_it(int reps, F fn)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    fn();
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<double> t;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a));
        fn();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms / 1e3);
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return summarize(t);
}

/* 0 if every gathered row is the row its index names. */
static int check_rows(const float *d_out, const uint64_t *d_idx, size_t n, uint32_t row_floats,
                      const char *what)
{
    size_t k = n < 4096 ? n : 4096;
    std::vector<float> out(k * row_floats);
    std::vector<uint64_t> idx(k);
    CK(cudaMemcpy(out.data(), d_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(idx.data(), d_idx, k * sizeof(uint64_t), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < k; i++)
        for (uint32_t j = 0; j < row_floats; j++) {
            float want = (float)(idx[i] % 16777216u) + (float)j;
            if (out[i * row_floats + j] != want) {
                fprintf(stderr, "gpu_micro: %s: row %zu (index %" PRIu64 ") element %u is %g, "
                        "want %g\n", what, i, idx[i], j, (double)out[i * row_floats + j],
                        (double)want);
                return 1;
            }
        }
    return 0;
}

/* kB of AnonHugePages in the mapping(s) covering [p, p + len), from /proc/self/smaps;
 * -1 if it cannot be read. A mapping's header line is "lo-hi perms ..."; its
 * fields ("AnonHugePages:    2048 kB") follow it. */
static long huge_kb(const void *p, size_t len)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512], perms[8];
    uintptr_t lo = (uintptr_t)p, hi = lo + len;
    int in = 0;
    long kb = 0;
    while (fgets(line, sizeof line, f)) {
        uintptr_t a, b;
        long v;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &a, &b, perms) == 3)
            in = a < hi && b > lo;
        else if (in && sscanf(line, "AnonHugePages: %ld kB", &v) == 1)
            kb += v;
    }
    fclose(f);
    return kb;
}

static void thp_setting(char *buf, size_t len)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    snprintf(buf, len, "unknown");
    if (f) {
        if (fgets(buf, (int)len, f))
            buf[strcspn(buf, "\n")] = 0;
        fclose(f);
    }
}

/* ---- the runs ---------------------------------------------------------------------- */

struct result {
    char what[96];
    stats3 s;
    double rows_per_s, gb_s;
};

static void report(std::vector<result> &res, const char *what, stats3 s, size_t n,
                   double bytes_per_row, double ref_gb_s)
{
    result r;
    snprintf(r.what, sizeof r.what, "%s", what);
    r.s = s;
    r.rows_per_s = n / s.med;
    r.gb_s = n * bytes_per_row / s.med / 1e9;
    printf("%-44s %8.3f B rows/s (2^30)  %8.1f GB/s", what, r.rows_per_s / (double)GIB, r.gb_s);
    if (ref_gb_s > 0)
        printf("  %5.1f%% of memcpy", 100.0 * r.gb_s / ref_gb_s);
    printf("  [%.3f %.3f %.3f ms]\n", s.min * 1e3, s.med * 1e3, s.max * 1e3);
    fflush(stdout);
    res.push_back(r);
}

static int usage(FILE *f)
{
    fprintf(f,
"usage: gpu_micro [options]\n"
"  --device-gib G   (a) device array of rows, GiB (default 4)\n"
"  --host-gib G     (b) pinned host array of rows per variant, GiB (default 4)\n"
"  --batch N        rows gathered per launch (default 1048576)\n"
"  --row-bytes B    bytes per row, a multiple of 16 (default 256: dim 64 float32)\n"
"  --reps R         timed launches per figure (default 5)\n"
"  --only WHICH     device or host: one half only\n"
"  --csv FILE       one row per figure\n"
"  --quick          64 MiB arrays, batch 65536, 2 reps (a smoke test)\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    opts o;
    static const struct option lo[] = {
        {"device-gib", required_argument, NULL, 'd'}, {"host-gib", required_argument, NULL, 'h'},
        {"batch", required_argument, NULL, 'b'},      {"row-bytes", required_argument, NULL, 'r'},
        {"reps", required_argument, NULL, 'n'},       {"csv", required_argument, NULL, 'c'},
        {"only", required_argument, NULL, 'o'},       {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'H'},             {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': o.device_gib = atof(optarg); break;
        case 'h': o.host_gib = atof(optarg); break;
        case 'b': o.batch = strtoull(optarg, NULL, 10); break;
        case 'r': o.row_bytes = strtoull(optarg, NULL, 10); break;
        case 'n': o.reps = atoi(optarg); break;
        case 'c': o.csv = optarg; break;
        case 'o': o.only = optarg; break;
        case 'q': o.quick = 1; break;
        case 'H': return usage(stdout);
        default: return usage(stderr);
        }
    }
    if (o.quick) {
        o.device_gib = o.host_gib = 64.0 / 1024;
        o.batch = 65536;
        o.reps = 2;
    }
    if (o.row_bytes == 0 || o.row_bytes % 16 || o.batch == 0 || o.reps < 1 ||
        o.device_gib <= 0 || o.host_gib <= 0 ||
        (o.only && strcmp(o.only, "device") && strcmp(o.only, "host"))) {
        fprintf(stderr, "gpu_micro: bad arguments\n");
        return usage(stderr);
    }

    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        printf("SKIPPED: no CUDA device visible\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    CK(cudaSetDevice(0));
    int sms = prop.multiProcessorCount;
    uint32_t cols = (uint32_t)(o.row_bytes / 16), row_floats = cols * 4;
    char thp[128];
    thp_setting(thp, sizeof thp);
    printf("gpu_micro: %s, %d SMs, %.1f GiB; rows of %zu bytes, batch %zu, reps %d; THP: %s\n",
           prop.name, sms, (double)prop.totalGlobalMem / GIB, o.row_bytes, o.batch, o.reps, thp);

    std::vector<result> res;
    uint64_t *d_idx = NULL, *d_sorted = NULL;
    float *d_out = NULL;
    CK(cudaMalloc((void **)&d_idx, o.batch * sizeof(uint64_t)));
    CK(cudaMalloc((void **)&d_sorted, o.batch * sizeof(uint64_t)));
    CK(cudaMalloc((void **)&d_out, o.batch * o.row_bytes));
    int bad = 0;

    /* (a) device memory: memcpy, then gathers */
    double memcpy_gb_s = 0;
    if (!o.only || !strcmp(o.only, "device")) {
        size_t bytes = (size_t)(o.device_gib * (double)GIB) / o.row_bytes * o.row_bytes;
        uint64_t nrows = bytes / o.row_bytes;
        float *d_rows = NULL, *d_copy = NULL;
        CK(cudaMalloc((void **)&d_rows, bytes));
        size_t cbytes = std::min(bytes, (size_t)2 * GIB);
        CK(cudaMalloc((void **)&d_copy, cbytes));
        k_fill_rows<<<sms * 8, BLOCK>>>(d_rows, nrows, row_floats);
        k_random_idx<<<sms * 8, BLOCK>>>(d_idx, o.batch, nrows, 1);
        CK(cudaGetLastError());
        stats3 s = time_it(o.reps, [&] {
            CK(cudaMemcpyAsync(d_copy, d_rows, cbytes, cudaMemcpyDeviceToDevice));
        });
        memcpy_gb_s = 2.0 * cbytes / s.med / 1e9;
        printf("%-44s %8.1f GB/s (read + write)  [%.3f %.3f %.3f ms]\n",
               "cudaMemcpy device to device", memcpy_gb_s, s.min * 1e3, s.med * 1e3,
               s.max * 1e3);
        result r;
        snprintf(r.what, sizeof r.what, "memcpy_d2d");
        r.s = s;
        r.rows_per_s = cbytes / (double)o.row_bytes / s.med;
        r.gb_s = memcpy_gb_s;
        res.push_back(r);
        CK(cudaFree(d_copy));
        unsigned grid = grid_of(sms, o.batch);
        for (unsigned u : {1u, 4u}) {
            char what[96];
            snprintf(what, sizeof what, "device gather U=%u (%.1f GiB)", u, (double)bytes / GIB);
            s = time_it(o.reps, [&] {
                gather(u, grid, (const float4 *)d_rows, cols, d_idx, o.batch, (float4 *)d_out);
            });
            report(res, what, s, o.batch, 2.0 * o.row_bytes, memcpy_gb_s);
            bad |= check_rows(d_out, d_idx, o.batch, row_floats, what);
        }
        CK(cudaFree(d_rows));
    }

    /* (b) host memory through the mapping: 4 KiB pages, 2 MiB advised, cudaHostAlloc */
    if (!o.only || !strcmp(o.only, "host")) {
        size_t bytes = (size_t)(o.host_gib * (double)GIB) / HUGE_2M * HUGE_2M;
        if (bytes < HUGE_2M)
            bytes = HUGE_2M;
        uint64_t nrows = bytes / o.row_bytes;
        std::vector<uint64_t> h_idx(o.batch);
        k_random_idx<<<sms * 8, BLOCK>>>(d_idx, o.batch, nrows, 2);
        CK(cudaGetLastError());
        CK(cudaMemcpy(h_idx.data(), d_idx, o.batch * sizeof(uint64_t), cudaMemcpyDeviceToHost));
        std::vector<uint64_t> sorted(h_idx);
        std::sort(sorted.begin(), sorted.end());
        CK(cudaMemcpy(d_sorted, sorted.data(), o.batch * sizeof(uint64_t),
                      cudaMemcpyHostToDevice));
        unsigned grid = grid_of(sms, o.batch);
        static const char *const kinds[3] = {"4k", "2m", "hostalloc"};
        for (int k = 0; k < 3; k++) {
            float *h = NULL;
            void *map = NULL;
            size_t maplen = 0;
            long hkb = -1;
            if (k < 2) {
                maplen = bytes + HUGE_2M;
                map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
                if (map == MAP_FAILED) {
                    fprintf(stderr, "gpu_micro: mmap %zu bytes: %s\n", maplen, strerror(errno));
                    return 1;
                }
                h = (float *)(((uintptr_t)map + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
                if (madvise(h, bytes, k == 1 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0)
                    printf("gpu_micro: madvise(%s): %s (going on)\n",
                           k == 1 ? "MADV_HUGEPAGE" : "MADV_NOHUGEPAGE", strerror(errno));
                for (uint64_t r = 0; r < nrows; r++)   /* fault every page in, rows named */
                    for (uint32_t j = 0; j < row_floats; j++)
                        h[r * row_floats + j] = (float)(r % 16777216u) + (float)j;
                hkb = huge_kb(h, bytes);
                CK(cudaHostRegister(h, bytes, cudaHostRegisterMapped));
            } else {
                CK(cudaHostAlloc((void **)&h, bytes, cudaHostAllocMapped | cudaHostAllocPortable));
                for (uint64_t r = 0; r < nrows; r++)
                    for (uint32_t j = 0; j < row_floats; j++)
                        h[r * row_floats + j] = (float)(r % 16777216u) + (float)j;
            }
            float *dh = NULL;
            CK(cudaHostGetDevicePointer((void **)&dh, h, 0));
            printf("host rows (%s): %.2f GiB, AnonHugePages %s%ld kB\n", kinds[k],
                   (double)bytes / GIB, hkb < 0 ? "n/a " : "", hkb < 0 ? 0 : hkb);
            for (int sorted_order = 0; sorted_order < 2; sorted_order++) {
                const uint64_t *ix = sorted_order ? d_sorted : d_idx;
                for (unsigned u : {1u, 4u}) {
                    char what[96];
                    snprintf(what, sizeof what, "host %s %s U=%u", kinds[k],
                             sorted_order ? "sorted" : "random", u);
                    stats3 s = time_it(o.reps, [&] {
                        gather(u, grid, (const float4 *)dh, cols, ix, o.batch, (float4 *)d_out);
                    });
                    report(res, what, s, o.batch, (double)o.row_bytes, 0);
                    bad |= check_rows(d_out, ix, o.batch, row_floats, what);
                }
            }
            if (k < 2) {
                CK(cudaHostUnregister(h));
                munmap(map, maplen);
            } else {
                CK(cudaFreeHost(h));
            }
        }
    }

    if (o.csv) {
        FILE *f = fopen(o.csv, "w");
        if (!f) {
            fprintf(stderr, "gpu_micro: cannot write %s\n", o.csv);
            return 1;
        }
        fprintf(f, "what,row_bytes,batch,min_ms,med_ms,max_ms,rows_per_s,bkeys_s_2p30,gb_s\n");
        for (const result &r : res)
            fprintf(f, "%s,%zu,%zu,%.4f,%.4f,%.4f,%.0f,%.4f,%.2f\n", r.what, o.row_bytes,
                    o.batch, r.s.min * 1e3, r.s.med * 1e3, r.s.max * 1e3, r.rows_per_s,
                    r.rows_per_s / (double)GIB, r.gb_s);
        fclose(f);
    }
    CK(cudaFree(d_idx));
    CK(cudaFree(d_sorted));
    CK(cudaFree(d_out));
    if (bad)
        printf("gpu_micro: FAILED: a gathered row was not the row asked for\n");
    return bad ? 1 : 0;
}
