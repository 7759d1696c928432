//! HPC launchers: a job script for Slurm (`sbatch`), SGE and PBS (`qsub`) or LSF (`bsub`),
//! submitted on stdin as a job array of N daemons, and cancelled when the pool is torn down.

use std::path::Path;
use std::process::{Command, Stdio};

use super::secret_dir::SecretDir;
use super::shell::{self, quote};
use super::{CommandTemplate, Target};
use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    Slurm,
    Sge,
    Pbs,
    Lsf,
}

impl Scheduler {
    fn submit_command(self) -> &'static str {
        match self {
            Scheduler::Slurm => "sbatch",
            Scheduler::Sge | Scheduler::Pbs => "qsub",
            Scheduler::Lsf => "bsub",
        }
    }

    fn cancel_command(self) -> &'static str {
        match self {
            Scheduler::Slurm => "scancel",
            Scheduler::Sge | Scheduler::Pbs => "qdel",
            Scheduler::Lsf => "bkill",
        }
    }

    /// The variable holding a job's index (1 to n) within its array.
    fn array_index(self) -> &'static str {
        match self {
            Scheduler::Slurm => "SLURM_ARRAY_TASK_ID",
            Scheduler::Sge => "SGE_TASK_ID",
            Scheduler::Pbs => "PBS_ARRAY_INDEX",
            Scheduler::Lsf => "LSB_JOBINDEX",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Scheduler::Slurm => "#SBATCH",
            Scheduler::Sge => "#$",
            Scheduler::Pbs => "#PBS",
            Scheduler::Lsf => "#BSUB",
        }
    }
}

/// A cluster launch: the scheduler, the user's option lines, and optionally other submit and
/// cancel commands (a site wrapper, or a stand-in for tests). An option line starting with `-`
/// is a directive, written after the scheduler's prefix (`--partition=debug --mem=1G` for
/// Slurm, `-l h_rt=1:00:00` for SGE); one starting with `#` is a directive written as it is;
/// any other line (`module load R`) is a command the job runs before the daemon.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub scheduler: Scheduler,
    pub options: Vec<String>,
    pub submit_command: Option<String>,
    pub cancel_command: Option<String>,
}

impl ClusterConfig {
    pub fn new(scheduler: Scheduler, options: &[&str]) -> Self {
        ClusterConfig {
            scheduler,
            options: options.iter().map(|o| o.to_string()).collect(),
            submit_command: None,
            cancel_command: None,
        }
    }
}

/// The job script for `n` daemons. The CA reaches the job through the submit command's
/// environment (exported by every scheduler's directive or default). The secret is not in the
/// script nor in that environment (schedulers keep both with the job): with `secret_dir`, each
/// job reads it from its own file there (`1` to `n`, by array index) and deletes the file.
pub fn job_script(
    config: &ClusterConfig,
    daemon: &CommandTemplate,
    url: &str,
    n: usize,
    secret_dir: Option<&Path>,
) -> String {
    let p = config.scheduler.prefix();
    let mut lines = vec!["#!/bin/sh".to_string()];
    match config.scheduler {
        Scheduler::Slurm => {
            lines.push(format!("{p} --job-name=mirai"));
            if n > 1 {
                lines.push(format!("{p} --array=1-{n}"));
            }
        }
        Scheduler::Sge => {
            lines.push(format!("{p} -N mirai"));
            lines.push(format!("{p} -V"));
            if n > 1 {
                lines.push(format!("{p} -t 1-{n}"));
            }
        }
        Scheduler::Pbs => {
            lines.push(format!("{p} -N mirai"));
            lines.push(format!("{p} -V"));
            if n > 1 {
                lines.push(format!("{p} -J 1-{n}"));
            }
        }
        Scheduler::Lsf => {
            lines.push(if n > 1 { format!("{p} -J mirai[1-{n}]") } else { format!("{p} -J mirai") });
        }
    }
    // Schedulers read directives only before the first command.
    let options = config.options.iter().map(|o| o.trim()).filter(|o| !o.is_empty());
    let (directives, commands): (Vec<&str>, Vec<&str>) = options.partition(|o| o.starts_with(['-', '#']));
    lines.extend(
        directives.iter().map(|o| if o.starts_with('#') { o.to_string() } else { format!("{p} {o}") }),
    );
    lines.extend(commands.iter().map(|c| c.to_string()));
    if let Some(dir) = secret_dir {
        let dir = quote(&dir.display().to_string());
        let index = if n > 1 { format!("${}", config.scheduler.array_index()) } else { "1".into() };
        lines.push(format!("f={dir}/{index}"));
        lines.push(format!(
            "IFS= read -r {0} < \"$f\" && rm -f \"$f\" && export {0} || {{ echo \"mirai: no secret in $f\" >&2; exit 1; }}",
            crate::auth::SECRET_ENV
        ));
    }
    lines.push(format!("exec {}", shell::command_line(daemon, url)));
    lines.join("\n") + "\n"
}

/// Submitted jobs, cancelled with [`Jobs::cancel`] (and when dropped).
#[derive(Debug)]
pub struct Jobs {
    pub ids: Vec<String>,
    cancel: String,
    /// The secret files of jobs that have not started yet, removed with the jobs.
    secrets: Option<SecretDir>,
}

impl Jobs {
    /// Cancels the jobs (`scancel`, `qdel`, `bkill`).
    pub fn cancel(&mut self) -> Result<(), Error> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let out = Command::new(&self.cancel)
            .args(&self.ids)
            .output()
            .map_err(|e| Error::io(format!("cannot run {}", self.cancel), e))?;
        let ids = std::mem::take(&mut self.ids);
        self.secrets = None;
        if !out.status.success() {
            return Err(Error::Launch(format!(
                "{} {} failed: {}",
                self.cancel,
                ids.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        if let Err(e) = self.cancel() {
            log::warn!("{e}");
        }
    }
}

/// The job id in a submit command's output: Slurm "Submitted batch job 123", SGE "Your job 123
/// (...)" or "Your job-array 123.1-4:1", PBS "123.server" or "123[].server", LSF "Job <123> is
/// submitted".
fn job_id(scheduler: Scheduler, stdout: &str) -> Option<String> {
    if scheduler == Scheduler::Pbs {
        return stdout.split_whitespace().next().map(str::to_string);
    }
    let start = stdout.find(|c: char| c.is_ascii_digit())?;
    let digits: String = stdout[start..].chars().take_while(char::is_ascii_digit).collect();
    Some(digits)
}

/// Submits a job array of `n` daemons for `target`; with a secret, through one-use files (see
/// [`job_script`]).
pub fn submit(
    target: &Target,
    daemon: &CommandTemplate,
    config: &ClusterConfig,
    n: usize,
) -> Result<Jobs, Error> {
    let secrets = target.secret_hex.as_deref().map(|s| SecretDir::create(s, n)).transpose()?;
    let script = job_script(config, daemon, &target.url, n, secrets.as_ref().map(SecretDir::path));
    let submit = config.submit_command.clone().unwrap_or_else(|| config.scheduler.submit_command().into());
    let ca = Target { secret_hex: None, ..target.clone() };
    let mut child = Command::new(&submit)
        // This process may hold the secret in its environment too (an R session does).
        .env_remove(crate::auth::SECRET_ENV)
        .envs(ca.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("cannot run {submit}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        crate::pipe_write::write_all(&mut stdin, script.as_bytes())
            .map_err(|e| Error::io(format!("writing the job script to {submit}"), e))?;
    }
    let out = child.wait_with_output().map_err(|e| Error::io(format!("waiting for {submit}"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Launch(format!(
            "{submit} rejected the job ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let id = job_id(config.scheduler, &stdout)
        .ok_or_else(|| Error::Launch(format!("{submit} printed no job id: {}", stdout.trim())))?;
    let cancel = config.cancel_command.clone().unwrap_or_else(|| config.scheduler.cancel_command().into());
    Ok(Jobs { ids: vec![id], cancel, secrets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_read_the_secret_from_their_own_file() {
        let d = CommandTemplate::new("mirai-daemon", &["{url}"]);
        let config = ClusterConfig::new(Scheduler::Slurm, &["module load R"]);
        let dir = Path::new("/home/u/.mirai/jobs-1");
        let script = job_script(&config, &d, "tcp://h:1", 3, Some(dir));
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[3], "module load R");
        assert_eq!(lines[4], "f=/home/u/.mirai/jobs-1/$SLURM_ARRAY_TASK_ID");
        assert!(
            lines[5].starts_with("IFS= read -r MIRAI_SECRET < \"$f\" && rm -f \"$f\" && export MIRAI_SECRET")
        );
        assert_eq!(lines[6], "exec mirai-daemon tcp://h:1");
        let single = job_script(&ClusterConfig::new(Scheduler::Lsf, &[]), &d, "tcp://h:1", 1, Some(dir));
        assert!(single.contains("f=/home/u/.mirai/jobs-1/1\n"), "{single}");
    }

    #[test]
    fn job_ids() {
        assert_eq!(job_id(Scheduler::Slurm, "Submitted batch job 4242\n").as_deref(), Some("4242"));
        assert_eq!(
            job_id(Scheduler::Sge, "Your job-array 77.1-3:1 (\"mirai\") has been submitted").as_deref(),
            Some("77")
        );
        assert_eq!(job_id(Scheduler::Pbs, "123[].pbs-server\n").as_deref(), Some("123[].pbs-server"));
        assert_eq!(
            job_id(Scheduler::Lsf, "Job <5150> is submitted to queue <normal>.").as_deref(),
            Some("5150")
        );
        assert_eq!(job_id(Scheduler::Slurm, "nothing"), None);
    }
}
