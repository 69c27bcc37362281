//! `zfs-snapshot`: one atomic snapshot of the job's datasets, read through read-only clones.
//!
//! - Snapshots are named `<dataset>@rackvault-<job>-<snapshot>` and carry `rackvault:view=<job>`.
//!   All datasets are snapshotted in one `zfs snapshot` call, so they are consistent with each
//!   other. zfs-fuse takes one operand only; there the common ancestor is snapshotted with `-r`
//!   (also atomic) and the snapshots of datasets that were not asked for are destroyed at once.
//! - Every snapshotted filesystem mounted at or under the job's source (or holding it) is cloned
//!   read-only into `<pool>/rackvault-views/<job>-<snapshot>-<n>`, mounted under
//!   `<state_dir>/views/<job>/root` in the same layout as the live tree, parents before children.
//!   Clones, not `.zfs/snapshot`, because zfs-fuse cannot reach the latter.
//! - Clones keep the origin's inode numbers and ctimes; only st_dev changes with each mount, so
//!   each clone's device maps to a stable id (a hash of the origin dataset's name) and the
//!   engine's fast path still recognises unchanged files.
//! - Snapshotted datasets that are not under the source are not read (a warning says so);
//!   rackvault's own datasets (store datasets, clones) are never read.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{Context, View};
use common::zfs::{Zfs, ZfsError};

/// Marks snapshots and clones made by this provider; the value is the job.
pub const PROP_VIEW: &str = "rackvault:view";
/// Marks the per-pool dataset that holds the clones.
pub const PROP_VIEWS: &str = "rackvault:views";
/// The per-pool container of clones (`<pool>/rackvault-views`): not mounted.
pub const VIEWS_CONTAINER: &str = "rackvault-views";
/// Properties that mark rackvault's own datasets, which a view never reads.
const OWN_PROPS: [&str; 3] = [
    common::snapshots::zfs::PROP_JOB,
    common::snapshots::zfs::PROP_READ_CLONE,
    PROP_VIEW,
];

/// The ZFS snapshot name a run uses: `rackvault-<job>-<snapshot>`.
pub fn snapshot_name(job: &str, snapshot: &str) -> String {
    format!("rackvault-{job}-{snapshot}")
}

/// Where a job's clones are mounted.
pub fn view_dir(state_dir: &Path, job: &str) -> PathBuf {
    let d = state_dir.join("views").join(job);
    if d.is_absolute() {
        d
    } else {
        std::env::current_dir().map(|c| c.join(&d)).unwrap_or(d)
    }
}

/// The stable device id recorded for files read through a clone of `dataset`.
pub fn stable_id(dataset: &str) -> u64 {
    let h = blake3::hash(format!("rackvault zfs dataset\0{dataset}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn pool_of(dataset: &str) -> &str {
    dataset.split('/').next().unwrap_or(dataset)
}

pub fn prepare(ctx: &Context, datasets: &[String], recursive: bool) -> Result<View> {
    let zfs = Zfs::default();
    let job = ctx.job.name.as_str();
    let snap = snapshot_name(job, ctx.snapshot);
    let source = std::fs::canonicalize(&ctx.job.source)
        .with_context(|| format!("cannot read the job's source {}", ctx.job.source.display()))?;
    for d in datasets {
        let kind = zfs.get_one(d, "type").map_err(|e| match e {
            ZfsError::Failed { stderr, .. } if stderr.contains("does not exist") => anyhow::anyhow!(
                "dataset {d} (in [job.consistency] datasets of job {job}) does not exist; fix the name or create it"
            ),
            e => anyhow::Error::from(e),
        })?;
        if kind != "filesystem" {
            anyhow::bail!(
                "dataset {d} is a {kind}, not a filesystem; zfs-snapshot reads filesystems only"
            );
        }
    }
    let pools: BTreeSet<&str> = datasets.iter().map(|d| pool_of(d)).collect();
    if pools.len() > 1 {
        anyhow::bail!(
            "datasets of job {job} are in several pools ({}); one atomic snapshot needs them in one pool: make one job per pool",
            pools.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let pool = pool_of(&datasets[0]).to_string();

    // Whatever fails from here on, dropping `view` undoes what was done so far.
    let mut view = View::point_in_time(PathBuf::new());
    let roots = take_snapshots(&zfs, datasets, recursive, &snap, job)?;
    {
        let (zfs, snap, job, roots) = (zfs.clone(), snap.clone(), job.to_string(), roots.clone());
        view.on_release(move || destroy_snapshots(&zfs, &roots, &snap, &job));
    }

    // Which snapshotted filesystems are read, and where they go.
    let mut wanted = Vec::new();
    for d in datasets {
        if recursive {
            wanted.extend(filesystems_under(&zfs, d)?);
        } else {
            wanted.push(d.clone());
        }
    }
    wanted.sort();
    wanted.dedup();
    let props = props_of(
        &zfs,
        &wanted,
        &[
            "mountpoint",
            "mounted",
            OWN_PROPS[0],
            OWN_PROPS[1],
            OWN_PROPS[2],
        ],
    )?;
    let mut holders: Vec<(PathBuf, String)> = Vec::new();
    let mut nested: Vec<(PathBuf, String)> = Vec::new();
    let mut unread = Vec::new();
    for d in &wanted {
        let p = &props[d];
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("-");
        if OWN_PROPS.iter().any(|k| !matches!(get(k), "-" | "")) {
            continue; // rackvault's own (a store dataset or a clone): never backed up from here
        }
        let mp = PathBuf::from(get("mountpoint"));
        if get("mounted") != "yes" || !mp.is_absolute() {
            unread.push(format!("{d} (not mounted)"));
        } else if mp != source && mp.starts_with(&source) {
            nested.push((mp, d.clone()));
        } else if source.starts_with(&mp) {
            holders.push((mp, d.clone()));
        } else {
            unread.push(format!("{d} (mounted at {})", mp.display()));
        }
    }
    // The deepest dataset holding the source is the one the source lives in.
    holders.sort_by_key(|(mp, _)| mp.components().count());
    let top = holders.pop().map(|(mp, d)| (d, mp));
    unread.extend(
        holders
            .into_iter()
            .map(|(mp, d)| format!("{d} (mounted at {})", mp.display())),
    );
    let Some((top_ds, top_mp)) = top else {
        anyhow::bail!(
            "the source {} of job {job} is not inside any of its snapshotted datasets ({}); \
             add the dataset that holds it to [job.consistency] datasets",
            source.display(),
            datasets.join(", ")
        );
    };
    if source != top_mp && dev_of(&source)? != dev_of(&top_mp)? {
        anyhow::bail!(
            "the source {} of job {job} is on another filesystem than dataset {top_ds} (mounted at {}); \
             add the dataset mounted at the source to [job.consistency] datasets (or set recursive = true)",
            source.display(),
            top_mp.display()
        );
    }
    if !unread.is_empty() {
        view.warnings.push(format!(
            "zfs-snapshot: snapshotted with the others but not read, as not under the source {}: {}",
            source.display(),
            unread.join(", ")
        ));
    }
    nested.sort();

    // The clones, parents before children.
    let container = ensure_container(&zfs, &pool)?;
    let dir = view_dir(ctx.state_dir, job);
    let clone_root = dir.join("root");
    std::fs::create_dir_all(&clone_root)
        .with_context(|| format!("cannot create the view directory {}", clone_root.display()))?;
    {
        let (dir, clone_root) = (dir.clone(), clone_root.clone());
        view.on_release(move || {
            for d in [&clone_root, &dir] {
                match std::fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot remove {}", d.display()));
                    }
                }
            }
            Ok(())
        });
    }
    view.root = clone_root.join(source.strip_prefix(&top_mp).expect("checked above"));
    let mut plan = vec![(top_ds, clone_root.clone())];
    for (mp, d) in nested {
        plan.push((
            d,
            view.root
                .join(mp.strip_prefix(&source).expect("checked above")),
        ));
    }
    for (i, (origin, at)) in plan.into_iter().enumerate() {
        let clone = format!("{container}/{job}-{}-{i}", ctx.snapshot);
        if i > 0 && !at.is_dir() {
            anyhow::bail!(
                "dataset {origin} is mounted at a directory that does not exist in the snapshot of its parent dataset \
                 ({} in the view); create that directory in the parent dataset, or do not snapshot {origin}",
                at.display()
            );
        }
        let at_s = at.to_string_lossy().into_owned();
        zfs.clone_snapshot(
            &format!("{origin}@{snap}"),
            &clone,
            &[("readonly", "on"), ("mountpoint", &at_s), (PROP_VIEW, job)],
        )
        .with_context(|| format!("cannot clone {origin}@{snap} to read it"))?;
        {
            let (zfs, clone) = (zfs.clone(), clone.clone());
            view.on_release(move || destroy_with_retry(&zfs, &clone));
        }
        let dev = mounted_dev(&zfs, &clone, &at)?;
        view.device_ids.insert(dev, stable_id(&origin));
        tracing::debug!(origin = %origin, clone = %clone, at = %at.display(), "mounted a read clone");
    }
    tracing::info!(job, snapshot = %snap, root = %view.root.display(), "zfs-snapshot view ready");
    Ok(view)
}

/// One atomic `zfs snapshot` of `datasets`; returns the datasets under which (recursively) the
/// run's snapshots are to be destroyed.
fn take_snapshots(
    zfs: &Zfs,
    datasets: &[String],
    recursive: bool,
    snap: &str,
    job: &str,
) -> Result<Vec<String>> {
    let prop = format!("{PROP_VIEW}={job}");
    let mut args = vec!["snapshot"];
    if recursive {
        args.push("-r");
    }
    args.extend(["-o", prop.as_str()]);
    let operands: Vec<String> = datasets.iter().map(|d| format!("{d}@{snap}")).collect();
    args.extend(operands.iter().map(String::as_str));
    match zfs.run(&args) {
        Ok(_) => return Ok(datasets.to_vec()),
        Err(ZfsError::Failed { stderr, .. })
            if datasets.len() > 1 && stderr.contains("too many arguments") => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot snapshot {}", operands.join(" ")));
        }
    }
    // One operand only (zfs-fuse): a recursive snapshot of the common ancestor is atomic too.
    let ancestor = common_ancestor(datasets);
    let full = format!("{ancestor}@{snap}");
    zfs.run(&["snapshot", "-r", "-o", &prop, &full])
        .with_context(|| {
            format!(
                "cannot snapshot {full} (recursively, to cover {})",
                datasets.join(", ")
            )
        })?;
    let keep = |ds: &str| {
        datasets.iter().any(|d| {
            ds == d
                || (recursive
                    && ds
                        .strip_prefix(d.as_str())
                        .is_some_and(|r| r.starts_with('/')))
        })
    };
    let extra: Vec<String> = list_snapshots(zfs, &ancestor, snap, job)?
        .into_iter()
        .filter(|s| !keep(s.split_once('@').map(|(d, _)| d).unwrap_or(s)))
        .collect();
    for s in extra.iter().rev() {
        // Leftovers here are destroyed at release; no need to fail the run for them.
        if let Err(e) = destroy_with_retry(zfs, s) {
            tracing::warn!(snapshot = %s, error = %format!("{e:#}"), "cannot destroy an extra snapshot");
        }
    }
    Ok(vec![ancestor])
}

/// The deepest dataset that is `d` or an ancestor of `d` for every `d` (same pool).
fn common_ancestor(datasets: &[String]) -> String {
    let mut parts: Vec<&str> = datasets[0].split('/').collect();
    for d in &datasets[1..] {
        let n = parts
            .iter()
            .zip(d.split('/'))
            .take_while(|(a, b)| *a == b)
            .count();
        parts.truncate(n);
    }
    parts.join("/")
}

/// Snapshots named `snap` under `root` (recursively) marked as this job's.
fn list_snapshots(zfs: &Zfs, root: &str, snap: &str, job: &str) -> Result<Vec<String>> {
    let cols = format!("name,{PROP_VIEW}");
    let out = zfs.run(&["list", "-H", "-t", "snapshot", "-o", &cols, "-r", root])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(name, v)| *v == job && name.split_once('@').is_some_and(|(_, s)| s == snap))
        .map(|(name, _)| name.to_string())
        .collect())
}

fn destroy_snapshots(zfs: &Zfs, roots: &[String], snap: &str, job: &str) -> Result<()> {
    let mut failed = Vec::new();
    for root in roots {
        let found = match list_snapshots(zfs, root, snap, job) {
            Ok(f) => f,
            Err(e) => {
                failed.push(format!("{root}@{snap}: {e:#}"));
                continue;
            }
        };
        // Children first, though ZFS does not require it for snapshots.
        for s in found.iter().rev() {
            if let Err(e) = destroy_with_retry(zfs, s) {
                failed.push(format!("{e:#}"));
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "cannot destroy snapshot(s) {} (the next run of the job retries)",
            failed.join("; ")
        );
    }
    Ok(())
}

/// `d` and its descendant filesystems.
fn filesystems_under(zfs: &Zfs, d: &str) -> Result<Vec<String>> {
    let out = zfs.run(&["list", "-H", "-o", "name", "-t", "filesystem", "-r", d])?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn props_of(
    zfs: &Zfs,
    names: &[String],
    props: &[&str],
) -> Result<HashMap<String, HashMap<String, String>>> {
    let mut out: HashMap<String, HashMap<String, String>> =
        names.iter().map(|n| (n.clone(), HashMap::new())).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    for chunk in refs.chunks(200) {
        for p in zfs.get(chunk, props)? {
            out.entry(p.name).or_default().insert(p.property, p.value);
        }
    }
    Ok(out)
}

/// `<pool>/rackvault-views`, created unmounted on first use; refuses a dataset of that name
/// that is not rackvault's.
fn ensure_container(zfs: &Zfs, pool: &str) -> Result<String> {
    let name = format!("{pool}/{VIEWS_CONTAINER}");
    if zfs.exists(&name)? {
        let mark = zfs.get_one(&name, PROP_VIEWS)?;
        if mark != "yes" {
            anyhow::bail!(
                "dataset {name} exists but is not rackvault's container of read clones ({PROP_VIEWS} is not yes); \
                 rename it, or set {PROP_VIEWS}=yes if it is"
            );
        }
        return Ok(name);
    }
    match zfs.create(
        &name,
        &[
            ("canmount", "off"),
            ("mountpoint", "none"),
            (PROP_VIEWS, "yes"),
        ],
    ) {
        Ok(()) => Ok(name),
        // Another job created it just now.
        Err(_) if zfs.exists(&name).unwrap_or(false) => Ok(name),
        Err(e) => Err(e).with_context(|| format!("cannot create {name} to hold read clones")),
    }
}

fn dev_of(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("cannot stat {}", p.display()))?
        .dev())
}

/// The st_dev of the clone mounted at `at`, mounting it if `zfs clone` did not.
fn mounted_dev(zfs: &Zfs, clone: &str, at: &Path) -> Result<u64> {
    let parent = at.parent().unwrap_or(at);
    let is_mounted = || -> Result<Option<u64>> {
        let dev = dev_of(at)?;
        Ok((dev != dev_of(parent)?).then_some(dev))
    };
    if let Some(dev) = is_mounted()? {
        return Ok(dev);
    }
    zfs.mount(clone)
        .with_context(|| format!("cannot mount the read clone {clone} at {}", at.display()))?;
    is_mounted()?.ok_or_else(|| {
        anyhow::anyhow!(
            "the read clone {clone} is not mounted at {} after `zfs mount`",
            at.display()
        )
    })
}

/// Destroys a dataset or snapshot, retrying for a while: zfs-fuse reports "busy" for a moment
/// after a mount or unmount.
fn destroy_with_retry(zfs: &Zfs, name: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match zfs.destroy(name) {
            Ok(()) => return Ok(()),
            Err(ZfsError::Failed { stderr, .. }) if stderr.contains("does not exist") => {
                return Ok(());
            }
            Err(e @ ZfsError::Failed { .. }) => {
                let busy = matches!(&e, ZfsError::Failed { stderr, .. } if stderr.contains("busy"));
                last = Some(e);
                if !busy {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot destroy {name}")),
        }
    }
    Err(last.expect("at least one attempt")).with_context(|| format!("cannot destroy {name}"))
}

/// Destroys this job's clones and snapshots left by a run whose process died.
pub fn clean_leftovers(ctx: &Context, datasets: &[String]) -> Result<()> {
    let zfs = Zfs::default();
    let job = ctx.job.name.as_str();
    let prefix = format!("rackvault-{job}-");
    let mut failed = Vec::new();
    let pools: BTreeSet<&str> = datasets.iter().map(|d| pool_of(d)).collect();
    for pool in &pools {
        let container = format!("{pool}/{VIEWS_CONTAINER}");
        if !zfs.exists(&container)? {
            continue;
        }
        let cols3 = format!("name,{PROP_VIEW},mountpoint");
        let out = zfs.run(&[
            "list",
            "-H",
            "-o",
            &cols3,
            "-t",
            "filesystem",
            "-r",
            &container,
        ])?;
        let mut clones: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| {
                let mut it = l.split('\t');
                let (n, v, mp) = (it.next()?, it.next()?, it.next()?);
                let own = v == job
                    && n.strip_prefix(&format!("{container}/{job}-"))
                        .and_then(|rest| rest.rsplit_once('-'))
                        .is_some_and(|(snap, i)| {
                            common::snapname::parse(snap).is_some() && i.parse::<u32>().is_ok()
                        });
                own.then(|| (mp.to_string(), n.to_string()))
            })
            .collect();
        // Children (longer mountpoints) first.
        clones.sort();
        for (_, c) in clones.iter().rev() {
            tracing::warn!(clone = %c, "destroying a read clone left by an interrupted run");
            if let Err(e) = destroy_with_retry(&zfs, c) {
                failed.push(format!("{e:#}"));
            }
        }
    }
    // Snapshots: under each dataset and, for the one-operand fallback, their common ancestor.
    let mut roots: BTreeSet<String> = datasets.iter().cloned().collect();
    for pool in &pools {
        let same: Vec<String> = datasets
            .iter()
            .filter(|d| pool_of(d) == *pool)
            .cloned()
            .collect();
        roots.insert(common_ancestor(&same));
    }
    let mut seen = BTreeSet::new();
    let cols = format!("name,{PROP_VIEW}");
    for root in &roots {
        let out = match zfs.run(&["list", "-H", "-t", "snapshot", "-o", &cols, "-r", root]) {
            Ok(o) => o,
            Err(ZfsError::Failed { stderr, .. }) if stderr.contains("does not exist") => continue,
            Err(e) => return Err(e.into()),
        };
        for (name, v) in out.lines().filter_map(|l| l.split_once('\t')) {
            let ours = v == job
                && name.split_once('@').is_some_and(|(_, s)| {
                    s.strip_prefix(&prefix)
                        .is_some_and(|rest| common::snapname::parse(rest).is_some())
                });
            if ours && seen.insert(name.to_string()) {
                tracing::warn!(snapshot = %name, "destroying a snapshot left by an interrupted run");
                if let Err(e) = destroy_with_retry(&zfs, name) {
                    failed.push(format!("{e:#}"));
                }
            }
        }
    }
    let dir = view_dir(ctx.state_dir, job);
    for d in [dir.join("root"), dir] {
        let _ = std::fs::remove_dir(d);
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "cannot remove what an interrupted zfs-snapshot run of job {job} left: {}; destroy these by hand (zfs destroy)",
            failed.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_ancestor_is_component_wise() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(common_ancestor(&v(&["tank/a/b", "tank/a/c"])), "tank/a");
        assert_eq!(common_ancestor(&v(&["tank/ab", "tank/a"])), "tank");
        assert_eq!(common_ancestor(&v(&["tank/a"])), "tank/a");
    }

    #[test]
    fn stable_ids_differ_per_dataset() {
        assert_eq!(stable_id("tank/a"), stable_id("tank/a"));
        assert_ne!(stable_id("tank/a"), stable_id("tank/b"));
        assert_eq!(
            snapshot_name("j", "20261125T000000Z"),
            "rackvault-j-20261125T000000Z"
        );
    }
}
