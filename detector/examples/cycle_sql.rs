//! Writes every SQL statement a detector cycle can run, one `.sql` file each, so that another
//! ClickHouse version can be asked whether it accepts them (`scripts/test.sh` runs them on the
//! current engine with `scripts/check_ddl_chdb.py --db default --queries DIR`).
//!
//!   cargo run -p tripline-detector --example cycle_sql -- DIR

use tripline_detector::data::{every_read, CycleQuery, Shard, Thresholds};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: cycle_sql DIR (where the .sql files go)");
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let thresholds = Thresholds {
        no_backoff_ms: 250.0,
        scan_min_keys: 5,
        users: true,
        scans: true,
    };
    let (from_minute, to_minute) = (1_796_000_000, 1_796_000_240);
    let mut written = 0;
    // One worker of one and one of three; a live cycle and a replay's cut mid-minute.
    for shard in [Shard { index: 0, count: 1 }, Shard { index: 1, count: 3 }] {
        for as_of_ms in [None, Some(i64::from(to_minute) * 1000 + 30_000)] {
            let query = CycleQuery {
                shard,
                from_minute,
                to_minute,
                thresholds: &thresholds,
                with_budgets: true,
                as_of_ms,
            };
            let cut = if as_of_ms.is_some() { "cut" } else { "live" };
            for (name, sql) in every_read(&query) {
                let file = format!("{name}.{}-of-{}.{cut}.sql", shard.index, shard.count);
                std::fs::write(dir.join(file), format!("{sql};\n"))?;
                written += 1;
            }
        }
    }
    let now_s = to_minute + 30;
    for (name, sql) in tripline_detector::routine::every_read(&["key-1", "it's"], now_s) {
        std::fs::write(dir.join(format!("{name}.sql")), format!("{sql};\n"))?;
        written += 1;
    }
    println!("cycle_sql: {written} statements in {}", dir.display());
    Ok(())
}
