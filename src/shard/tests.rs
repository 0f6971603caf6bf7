//! Shard arithmetic for every source and base, hash stability, duration
//! balancing, and that the shards partition the suite.

use std::collections::{HashMap, HashSet};

use super::assign::{assign, crc32, key_of, median, shard_of};
use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| m.get(k).cloned()
}

fn auto(pairs: &[(&str, &str)]) -> Result<Resolved, String> {
    resolve(ShardArg::Auto, &env_of(pairs))
}

#[test]
fn parses_fixed_and_auto() {
    assert_eq!(parse_shard_arg("2/8"), Ok(ShardArg::Fixed(Shard { index: 2, total: 8 })));
    assert_eq!(parse_shard_arg(" 1/1 "), Ok(ShardArg::Fixed(Shard { index: 1, total: 1 })));
    assert_eq!(parse_shard_arg("AUTO"), Ok(ShardArg::Auto));
    for bad in ["0/3", "4/3", "1/0", "3", "a/b", "-1/3", "1/3/4", ""] {
        assert!(parse_shard_arg(bad).is_err(), "{bad} accepted");
    }
    let fixed = resolve(parse_shard_arg("3/4").unwrap(), &env_of(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "9")]));
    assert_eq!(fixed.unwrap().source, Source::Flag, "a fixed K/N ignores the environment");
}

#[test]
fn slurm_arrays_based_anywhere() {
    let r = auto(&[("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "0")]);
    assert_eq!(r.as_ref().unwrap().shard, Shard { index: 1, total: 3 });
    assert_eq!(r.unwrap().source, Source::Slurm);
    let r = auto(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "1")]);
    assert_eq!(r.as_ref().unwrap().shard, Shard { index: 3, total: 3 });
    assert!(r.unwrap().detail.contains("SLURM_ARRAY_TASK_MIN=1"));
    let r = auto(&[("SLURM_ARRAY_TASK_ID", "12"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "10")]);
    assert_eq!(r.unwrap().shard, Shard { index: 3, total: 4 });
    // --array=0-8:4 -> ids 0, 4, 8
    let stepped = [("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_STEP", "4")];
    let r = auto(&[&stepped[..], &[("SLURM_ARRAY_TASK_ID", "8")]].concat());
    assert_eq!(r.unwrap().shard, Shard { index: 3, total: 3 });
    assert!(auto(&[&stepped[..], &[("SLURM_ARRAY_TASK_ID", "5")]].concat()).is_err());
    // Out of range (an array with gaps), and a missing count.
    assert!(auto(&[("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "1")])
        .unwrap_err()
        .contains("SLURM_ARRAY_TASK_ID=7"));
    assert!(auto(&[("SLURM_ARRAY_TASK_ID", "1")]).unwrap_err().contains("SLURM_ARRAY_TASK_COUNT"));
    // Slurm wins over the CI variables a runner may also set.
    let r = auto(&[
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("CI_NODE_INDEX", "1"),
        ("CI_NODE_TOTAL", "5"),
    ]);
    assert_eq!(r.unwrap().shard, Shard { index: 2, total: 2 });
}

#[test]
fn ci_sources_and_their_bases() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Source, u32, u32);
    let cases: [Case; 8] = [
        (&[("TEST_SHARD_INDEX", "0"), ("TEST_TOTAL_SHARDS", "4")], Source::Bazel, 1, 4),
        (&[("TEST_SHARD_INDEX", "3"), ("TEST_TOTAL_SHARDS", "4")], Source::Bazel, 4, 4),
        (&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "2")], Source::Gitlab, 1, 2),
        (&[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "2")], Source::Gitlab, 2, 2),
        (&[("BUILDKITE_PARALLEL_JOB", "0"), ("BUILDKITE_PARALLEL_JOB_COUNT", "5")], Source::Buildkite, 1, 5),
        (&[("BUILDKITE_PARALLEL_JOB", "4"), ("BUILDKITE_PARALLEL_JOB_COUNT", "5")], Source::Buildkite, 5, 5),
        (&[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "3")], Source::Circleci, 1, 3),
        (&[("CIRCLE_NODE_INDEX", "2"), ("CIRCLE_NODE_TOTAL", "3")], Source::Circleci, 3, 3),
    ];
    for (env, source, index, total) in cases {
        let r = auto(env).unwrap_or_else(|e| panic!("{env:?}: {e}"));
        assert_eq!((r.source, r.shard), (source, Shard { index, total }), "{env:?}");
        assert!(r.detail.contains(env[0].0) && r.detail.contains("based"), "{}", r.detail);
    }
    // Out of range for the base: GitLab is 1-based, so 0 is wrong; Bazel's
    // index equal to the total is wrong.
    assert!(auto(&[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "2")]).is_err());
    assert!(auto(&[("TEST_SHARD_INDEX", "4"), ("TEST_TOTAL_SHARDS", "4")]).is_err());
    assert!(auto(&[("CIRCLE_NODE_INDEX", "x"), ("CIRCLE_NODE_TOTAL", "3")]).unwrap_err().contains("whole number"));
    assert!(auto(&[("BUILDKITE_PARALLEL_JOB", "1")]).unwrap_err().contains("BUILDKITE_PARALLEL_JOB_COUNT"));
    // Bazel's status file is handed back for the caller to touch.
    let r = auto(&[("TEST_SHARD_INDEX", "1"), ("TEST_TOTAL_SHARDS", "2"), ("TEST_SHARD_STATUS_FILE", "/tmp/s")]);
    assert_eq!(r.unwrap().status_file, Some(PathBuf::from("/tmp/s")));
    // Order: Bazel before GitLab before Buildkite before CircleCI.
    let r =
        auto(&[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "3"), ("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "2")]);
    assert_eq!(r.unwrap().source, Source::Gitlab);
}

#[test]
fn auto_without_a_source_is_one_clear_line() {
    let e = auto(&[("SLURM_JOB_ID", "5"), ("CI_NODE_TOTAL", "3")]).unwrap_err();
    assert!(e.starts_with("--shard auto: no shard in the environment"), "{e}");
    assert!(!e.contains('\n'));
    // Empty values count as unset.
    assert!(auto(&[("CI_NODE_INDEX", " "), ("CI_NODE_TOTAL", "3")]).is_err());
}

/// The fixed list checked against the same expected shards in the plugin's
/// tests (shim/tests/test_shard.py): both sides must never change them.
pub(crate) const IDS: [&str; 10] = [
    "tests/test_a.py::test_one",
    "tests/test_a.py::test_two[1-2]",
    "tests/test_b.py::TestK::test_x[\"q\"]",
    "tests/test_b.py::TestK::test_y[<&>]",
    "tests/sub/test_c.py::test_ünïcode[ß-€]",
    "tests/sub/test_c.py::test_nl[a\nb]",
    "tests/test_d.py::test_d",
    "tests/test_d.py::test_e",
    "doc/mod.py::mod.func",
    "tests/test_e.py::test_z[0]",
];

#[test]
fn hash_assignment_is_stable() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the standard CRC-32 check value");
    assert_eq!(crc32(IDS[0].as_bytes()), 0xacad_02c7);
    let none = HashMap::new();
    let expect: [(u32, [u32; 10], [u32; 10]); 3] = [
        (2, [2, 1, 2, 1, 1, 1, 1, 1, 1, 2], [2, 2, 2, 2, 1, 1, 2, 2, 1, 1]),
        (3, [1, 1, 3, 3, 1, 3, 1, 2, 2, 1], [3, 3, 1, 1, 2, 2, 3, 3, 1, 2]),
        (5, [2, 5, 4, 2, 3, 2, 3, 2, 3, 5], [2, 2, 5, 5, 3, 3, 5, 5, 5, 3]),
    ];
    for (n, by_test, by_file) in expect {
        assert_eq!(assign(&IDS, n, ShardBy::Test, ShardMode::Hash, &none), by_test, "by test, {n} shards");
        assert_eq!(assign(&IDS, n, ShardBy::File, ShardMode::Hash, &none), by_file, "by file, {n} shards");
    }
    assert_eq!(key_of("a/b.py::C::t[x::y]", ShardBy::File), "a/b.py");
    assert_eq!(shard_of("anything", 1), 1);
}

fn durations() -> HashMap<String, f64> {
    [
        ("a.py::t1", 5.0),
        ("a.py::t2", 1.0),
        ("b.py::t1", 3.0),
        ("c.py::t1", 2.0),
        ("c.py::t2", 2.0),
        ("gone.py::t", 99.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Worked by hand in the module docs' rules: d.py::t1 is missing and gets
/// the median 2 of the collected tests' known durations (5, 1, 3, 2, 2).
pub(crate) const DURATION_IDS: [&str; 6] = ["a.py::t1", "a.py::t2", "b.py::t1", "c.py::t1", "c.py::t2", "d.py::t1"];

#[test]
fn duration_balancing_is_greedy_with_the_median_for_missing_tests() {
    let d = durations();
    // By test: a::t1(5)->1, b::t1(3)->2, c::t1(2)->2 (3<5), c::t2(2)->1 (5=5: lower),
    // d::t1(2)->2 (7>5... loads 7,5), a::t2(1)->1 (7=7: lower).
    assert_eq!(assign(&DURATION_IDS, 2, ShardBy::Test, ShardMode::Duration, &d), [1, 1, 2, 2, 1, 2]);
    // By file: a(6)->1, c(4)->2, b(3)->2, d(2)->1.
    assert_eq!(assign(&DURATION_IDS, 2, ShardBy::File, ShardMode::Duration, &d), [1, 1, 2, 2, 2, 1]);
    // No durations at all: every test weighs 1 s, so shards differ by at most one.
    let counts = |v: Vec<u32>| (1..=4).map(|k| v.iter().filter(|s| **s == k).count()).collect::<Vec<_>>();
    let ids: Vec<String> = (0..10).map(|i| format!("t.py::t{i}")).collect();
    let c = counts(assign(&ids, 4, ShardBy::Test, ShardMode::Duration, &HashMap::new()));
    assert_eq!(c, [3, 3, 2, 2]);
    let mut v = vec![3.0, 1.0, 2.0, 10.0];
    assert_eq!(median(&mut v), Some(2.5));
    assert_eq!(median(&mut []), None);
    // Bad values count as missing.
    let bad: HashMap<String, f64> = [("t.py::t0".to_string(), f64::NAN), ("t.py::t1".to_string(), -1.0)].into();
    assert_eq!(counts(assign(&ids, 4, ShardBy::Test, ShardMode::Duration, &bad)), [3, 3, 2, 2]);
}

#[test]
fn shards_partition_the_suite() {
    let ids: Vec<String> =
        (0..500).map(|i| format!("tests/test_m{}.py::TestC::test_{i}[p{}]", i % 37, i * 7)).collect();
    let d: HashMap<String, f64> =
        ids.iter().step_by(3).enumerate().map(|(i, n)| (n.clone(), (i % 13) as f64)).collect();
    for n in [1u32, 2, 3, 7, 16] {
        for by in [ShardBy::File, ShardBy::Test] {
            for mode in [ShardMode::Hash, ShardMode::Duration] {
                let a = assign(&ids, n, by, mode, &d);
                assert_eq!(a.len(), ids.len());
                assert!(a.iter().all(|s| (1..=n).contains(s)), "{n} {by:?} {mode:?}");
                // Each test is in exactly one shard; a file never spans two with `file`.
                let mut seen = HashSet::new();
                for k in 1..=n {
                    for (id, s) in ids.iter().zip(&a) {
                        if *s == k {
                            assert!(seen.insert(id.clone()));
                        }
                    }
                }
                assert_eq!(seen.len(), ids.len());
                if by == ShardBy::File {
                    let mut file_shard = HashMap::new();
                    for (id, s) in ids.iter().zip(&a) {
                        assert_eq!(*file_shard.entry(key_of(id, by)).or_insert(*s), *s);
                    }
                }
            }
        }
    }
}

#[test]
fn plan_travels_as_json() {
    let p = Plan {
        index: 2,
        total: 3,
        by: ShardBy::Test,
        mode: ShardMode::Duration,
        durations: Some("/d.json".into()),
        collection: None,
    };
    assert_eq!(p.to_env(), r#"{"index":2,"total":3,"by":"test","mode":"duration","durations":"/d.json"}"#);
    assert_eq!(serde_json::from_str::<Plan>(&p.to_env()).unwrap(), p);
}
