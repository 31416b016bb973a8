/*
 * hkv_bench_main.cu — HierarchicalKV's own benchmark, run on chosen shapes only.
 *
 * Not part of ember's build: tests/gpu/build_hkv_bench.sh compiles it against a
 * HierarchicalKV source tree given on its command line (nothing of HierarchicalKV
 * lives in this repository). It includes HKV's benchmark/merlin_hashtable_benchmark.cc.cu
 * unchanged, renaming that file's main() (whose fixed matrix ends with a 512 M-key
 * hybrid table needing ~96 GiB of pinned host memory, too long for a visit), and
 * calls the same test_main() with HKV's conventions on the shapes ember's
 * table_bench --hkv-matrix measures: float32 rows, 1,048,576 keys per call, LRU,
 * λ 0.5/0.75/1.0, billions of keys/s (2^30).
 *
 * Usage: hkv_bench [hbm64] [hbm8] [hbm128] [hybrid64] [all]   (default: hbm64 hybrid64)
 * Exits 77 where no CUDA device is usable.
 *   hbm64     dim 64, 64 M keys, 16 GiB of HBM for rows (pure HBM)
 *   hbm8      dim 8, 128 M keys, 4 GiB (pure HBM)
 *   hbm128    dim 128, 64 M keys, 32 GiB (pure HBM; not in HKV's own matrix)
 *   hybrid64  dim 64, 128 M keys, 16 GiB of HBM + 16 GiB of host memory
 */
#define main hkv_benchmark_full_main
#include "merlin_hashtable_benchmark.cc.cu"
#undef main

#include <cstring>

static void run_shape(const char *name)
{
    const size_t batch = 1024 * 1024UL;
    std::vector<API_Select> apis{API_Select::insert_or_assign, API_Select::find,
                                 API_Select::find_or_insert, API_Select::assign};
    struct {
        const char *name;
        Test_Mode mode;
        size_t dim, capacity, hbm_gib;
    } shapes[] = {
        {"hbm64", Test_Mode::pure_hbm, 64, 64 * 1024 * 1024UL, 16},
        {"hbm8", Test_Mode::pure_hbm, 8, 128 * 1024 * 1024UL, 4},
        {"hbm128", Test_Mode::pure_hbm, 128, 64 * 1024 * 1024UL, 32},
        {"hybrid64", Test_Mode::hybrid, 64, 128 * 1024 * 1024UL, 16},
    };
    for (auto &s : shapes) {
        if (strcmp(s.name, name) != 0)
            continue;
        test_mode = s.mode;
        cout << "\n* shape " << s.name << ": dim = " << s.dim
             << ", capacity = " << s.capacity / (1024 * 1024) << " Million-KV, HBM = "
             << s.hbm_gib << " GB, " << (s.mode == Test_Mode::hybrid ? "hybrid" : "pure HBM")
             << "\n";
        cout << "\n|    \u03BB | insert_or_assign |   find | find_or_insert | assign |\n"
             << "|-----:|-----------------:|-------:|---------------:|-------:|\n";
        test_main(apis, s.dim, s.capacity, batch, s.hbm_gib);
        return;
    }
    cerr << "hkv_bench: unknown shape '" << name << "' (hbm64 hbm8 hbm128 hybrid64 all)\n";
    exit(2);
}

int main(int argc, char **argv)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        cerr << "hkv_bench: no usable CUDA device\n";
        return 77;
    }
    cudaDeviceProp props;
    CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
    cout << "## HierarchicalKV benchmark (hkv_bench_main.cu)\n* GPU: " << props.name
         << "\n* Throughput Unit: Billion-KV/second (2^30), 1,048,576 keys per call, LRU\n";
    try {
        if (argc < 2) {
            run_shape("hbm64");
            run_shape("hybrid64");
        }
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "all") == 0) {
                for (const char *s : {"hbm64", "hbm8", "hbm128", "hybrid64"})
                    run_shape(s);
            } else {
                run_shape(argv[i]);
            }
        }
        CUDA_CHECK(cudaDeviceSynchronize());
    } catch (const nv::merlin::CudaException &e) {
        cerr << e.what() << endl;
        return 1;
    }
    return 0;
}
