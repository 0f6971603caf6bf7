//! Processes left running once the command ended: whole trees, not just
//! the first level. Everything in the command's process group, orphaned to
//! the wrapper (its subreaper), descended from those (`/proc` parent links),
//! or in a process group or session one of them made, is listed and, unless
//! kept, killed, round after round until nothing is left (a loop that
//! respawns its children is killed too).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::pid::Target;
use super::proc::{self, Stat};
use super::wait::{wait, Backoff};
use super::Leftover;

/// How long processes still running when the command ended get to exit
/// before they count as leftovers.
pub const GRACE: Duration = Duration::from_millis(300);

/// The most time spent killing respawning trees.
const KILL_FOR: Duration = Duration::from_secs(5);

/// The live leftover tree of the command whose process group is `root`;
/// `seeds` are more processes known to belong to it (traced ones).
pub fn tree(root: i32, seeds: &[i32]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    let table: HashMap<i32, Stat> = proc::all_pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter_map(|p| proc::stat(p).filter(|s| !s.is_dead()).map(|s| (p, s)))
        .collect();
    let mut set: HashSet<i32> =
        table.iter().filter(|(p, s)| s.pgrp == root || s.ppid == me || seeds.contains(p)).map(|(p, _)| *p).collect();
    loop {
        let more: Vec<i32> = table
            .iter()
            .filter(|(p, s)| !set.contains(p) && s.pgrp != my_group)
            .filter(|(_, s)| set.contains(&s.ppid) || set.contains(&s.pgrp) || set.contains(&s.session))
            .map(|(p, _)| *p)
            .collect();
        if more.is_empty() {
            break;
        }
        set.extend(more);
    }
    let mut v: Vec<i32> = set.into_iter().collect();
    v.sort_unstable();
    v
}

/// After `grace` for processes on their way out, lists the leftover tree
/// and, unless `keep`, kills it (and the groups its members lead) until
/// none is left. Every process seen is listed once, in pid order.
pub fn collect(root: i32, seeds: &[i32], grace: Duration, keep: bool) -> Vec<Leftover> {
    let grace_end = Instant::now() + grace;
    let mut live = tree(root, seeds);
    let mut backoff = Backoff::new();
    while !live.is_empty() && Instant::now() < grace_end {
        backoff.pause();
        reap_orphans();
        live = tree(root, seeds);
    }
    let mut seen: BTreeMap<i32, String> = BTreeMap::new();
    let until = Instant::now() + KILL_FOR;
    while !live.is_empty() {
        for &pid in &live {
            seen.entry(pid).or_insert_with(|| proc::cmdline(pid));
        }
        if keep || Instant::now() >= until {
            break;
        }
        kill_all(&live);
        backoff.pause();
        reap_orphans();
        live = tree(root, seeds);
    }
    reap_orphans();
    seen.into_iter().map(|(pid, cmdline)| Leftover { pid, cmdline }).collect()
}

/// SIGKILL to each process and to each group one of them leads.
fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let leads_group = proc::stat(pid).is_some_and(|s| s.pgrp == pid);
        Target::process(pid).kill();
        if leads_group {
            Target::group(pid).kill();
        }
    }
}

/// Reaps descendants orphaned to us (we are their subreaper).
pub fn reap_orphans() {
    while let Ok(w) = wait(-1, libc::WNOHANG) {
        if w == super::wait::Wait::Nothing {
            break;
        }
    }
}
