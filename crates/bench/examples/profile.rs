//! `cargo run --release -p bench --example profile -- NODES PENDING GROUPS [RUNS] [SEED]`:
//! the `batch-autoscaler bench` figures without building the whole binary, for
//! profiling the planner (`perf record`, `valgrind --tool=callgrind`).

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("whole numbers"))
        .collect();
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    let config = bench::BenchConfig {
        size: bench::ClusterSize {
            nodes: arg(0, 5_000),
            pending_pods: arg(1, 50_000),
            groups: arg(2, 50),
        },
        runs: arg(3, 5),
        seed: arg(4, 1) as u64,
    };
    let report = bench::run(config);
    print!("{}", report.summary());
    // On a shared machine the fastest run is the least disturbed one.
    println!(
        "fastest runs:     scale-up {:.1} ms, scale-down {:.1} ms",
        report.scale_up_plan_ms.min, report.scale_down_pass_ms.min
    );
    if let (Some(up), Some(down)) = (report.scale_up_cpu_ms, report.scale_down_cpu_ms) {
        println!(
            "fastest CPU time: scale-up {:.1} ms, scale-down {:.1} ms",
            up.min, down.min
        );
    }
}
