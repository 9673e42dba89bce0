//! The Cloud Run job template the launcher manages: what the settings want
//! ([`desired_job`]), how it is put onto an existing job without losing what an admin added
//! by hand ([`merged`]), and what changed ([`drift`]).
//!
//! Managed (set from the settings on every create and update): the container's image and
//! name, the managed environment variables (every `DBT_REMOTE_*`, `DBT_PROFILES_DIR`, and the
//! others the server passes on, see [`is_managed_env`]), the profiles secret's volume and
//! mount ([`PROFILES_VOLUME`]), the task timeout, no retries, one task, the label
//! [`JOB_LABEL`], and the service account, CPU and memory when they are configured.
//! Everything else of an existing job is kept: other variables (also those read from
//! secrets), volumes, mounts, labels, annotations, VPC access, the execution environment,
//! other containers, other resource limits.

use google_cloud_run_v2::model::{
    Container, EnvVar, ExecutionTemplate, Job, ResourceRequirements, SecretVolumeSource,
    TaskTemplate, VersionToPath, Volume, VolumeMount,
};

use super::builder::Config;
use super::{
    wkt_duration, CONTAINER_NAME, DEFAULT_CPU, DEFAULT_MEMORY, JOB_LABEL, PROFILES_MOUNT,
    PROFILES_VOLUME,
};
use crate::env;

/// The file name of the profiles secret in [`PROFILES_MOUNT`].
const PROFILES_FILE: &str = "profiles.yml";

/// The Cloud Run job as the settings want it (what a new job is created with).
pub(super) fn desired_job(c: &Config) -> Job {
    let mut env = c.env.clone();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    if let Some(p) = &c.profiles {
        env.insert(env::PROFILES_DIR.into(), PROFILES_MOUNT.into());
        mounts.push(
            VolumeMount::new()
                .set_name(PROFILES_VOLUME)
                .set_mount_path(PROFILES_MOUNT),
        );
        let secret =
            SecretVolumeSource::new()
                .set_secret(&p.secret)
                .set_items([VersionToPath::new()
                    .set_path(PROFILES_FILE)
                    .set_version(&p.version)]);
        volumes.push(Volume::new().set_name(PROFILES_VOLUME).set_secret(secret));
    }
    let cpu = c.cpu.as_deref().unwrap_or(DEFAULT_CPU);
    let memory = c.memory.as_deref().unwrap_or(DEFAULT_MEMORY);
    let container = Container::new()
        .set_name(CONTAINER_NAME)
        .set_image(&c.image)
        .set_env(
            env.iter()
                .map(|(name, value)| EnvVar::new().set_name(name).set_value(value)),
        )
        .set_resources(ResourceRequirements::new().set_limits([("cpu", cpu), ("memory", memory)]))
        .set_volume_mounts(mounts);
    let task = TaskTemplate::new()
        .set_containers([container])
        .set_volumes(volumes)
        .set_timeout(wkt_duration(c.task_timeout))
        .set_service_account(&c.service_account)
        .set_max_retries(0);
    Job::new().set_labels([JOB_LABEL]).set_template(
        ExecutionTemplate::new()
            .set_task_count(1)
            .set_template(task),
    )
}

/// Whether an environment variable of the job template is the server's: every `DBT_REMOTE_*`
/// (the server's settings; an execution must see the server's, not stale ones),
/// `DBT_PROFILES_DIR`, and whatever else `desired` sets (the GCP store's settings).
fn is_managed_env(name: &str, desired: &[EnvVar]) -> bool {
    name.starts_with("DBT_REMOTE_")
        || name == env::PROFILES_DIR
        || desired.iter().any(|e| e.name == name)
}

/// `existing` with the managed fields of the settings `c` (see the module's doc) and
/// everything else as it is, without its output-only fields: the body of the update.
pub(super) fn merged(existing: &Job, c: &Config) -> Job {
    let desired = desired_job(c);
    let mut job = existing.clone();
    clear_output_only(&mut job);
    job.labels.extend(desired.labels.clone());
    let want = desired.template.unwrap_or_default();
    let exec = job.template.get_or_insert_with(ExecutionTemplate::new);
    exec.task_count = want.task_count;
    let want = want.template.unwrap_or_default();
    let task = exec.template.get_or_insert_with(TaskTemplate::new);
    task.timeout = want.timeout;
    // An API answer may leave out `maxRetries: 0`: compare values, not presence.
    if task.max_retries() != want.max_retries() {
        task.retries = want.retries.clone();
    }
    if !want.service_account.is_empty() {
        task.service_account = want.service_account.clone();
    }
    task.volumes.retain(|v| v.name != PROFILES_VOLUME);
    task.volumes.extend(want.volumes.iter().cloned());
    let Some(want_container) = want.containers.first() else {
        return job;
    };
    let position = task
        .containers
        .iter()
        .position(|c| c.name == CONTAINER_NAME)
        .or((!task.containers.is_empty()).then_some(0));
    match position {
        Some(i) => merge_container(&mut task.containers[i], want_container, c),
        None => task.containers.insert(0, want_container.clone()),
    }
    job
}

/// Sets the managed fields of `want` on the container `have`.
fn merge_container(have: &mut Container, want: &Container, c: &Config) {
    have.name = want.name.clone();
    have.image = want.image.clone();
    have.env.retain(|e| !is_managed_env(&e.name, &want.env));
    have.env.extend(want.env.iter().cloned());
    for (key, value) in [("cpu", &c.cpu), ("memory", &c.memory)] {
        if let Some(value) = value {
            have.resources
                .get_or_insert_with(ResourceRequirements::new)
                .limits
                .insert(key.into(), value.clone());
        }
    }
    have.volume_mounts.retain(|m| m.name != PROFILES_VOLUME);
    have.volume_mounts
        .extend(want.volume_mounts.iter().cloned());
}

/// Clears what the API sets and an update does not send back.
fn clear_output_only(job: &mut Job) {
    job.uid.clear();
    job.generation = 0;
    job.create_time = None;
    job.update_time = None;
    job.delete_time = None;
    job.expire_time = None;
    job.creator.clear();
    job.last_modifier.clear();
    job.observed_generation = 0;
    job.terminal_condition = None;
    job.conditions.clear();
    job.execution_count = 0;
    job.latest_created_execution = None;
    job.reconciling = false;
    job.satisfies_pzs = false;
    job.etag.clear();
}

/// What of `merged` (from [`merged`]) the existing job lacks, in words; `None` when the job
/// is as the settings want it and needs no update.
pub(super) fn drift(existing: &Job, merged: &Job) -> Option<&'static str> {
    let mut have = existing.clone();
    clear_output_only(&mut have);
    have.name = merged.name.clone();
    if have == *merged {
        return None;
    }
    if have.labels != merged.labels {
        return Some("labels");
    }
    let exec = |j: &Job| j.template.clone().unwrap_or_default();
    let (he, we) = (exec(&have), exec(merged));
    if he.task_count != we.task_count {
        return Some("task count");
    }
    let task = |e: &ExecutionTemplate| e.template.clone().unwrap_or_default();
    let (ht, wt) = (task(&he), task(&we));
    let checks = [
        (ht.retries != wt.retries, "retries"),
        (ht.timeout != wt.timeout, "task timeout"),
        (ht.service_account != wt.service_account, "service account"),
        (ht.volumes != wt.volumes, "profiles volume"),
    ];
    if let Some((_, what)) = checks.into_iter().find(|(differs, _)| *differs) {
        return Some(what);
    }
    let first = |t: &TaskTemplate| t.containers.first().cloned().unwrap_or_default();
    let (hc, wc) = (first(&ht), first(&wt));
    let checks = [
        (hc.name != wc.name || hc.image != wc.image, "image"),
        (hc.resources != wc.resources, "CPU or memory"),
        (hc.env != wc.env, "environment"),
        (hc.volume_mounts != wc.volume_mounts, "profiles mount"),
    ];
    checks
        .into_iter()
        .find(|(differs, _)| *differs)
        .map(|(_, what)| what)
        .or(Some("template"))
}
