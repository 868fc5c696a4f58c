//! A kubelet stand-in for builder Jobs: runs the init containers and the containers of the pod
//! template the controller rendered, on this machine, as the kubelet would, and reports the
//! pod status it would write (exit codes, the termination message read from the file).
//!
//! What it does like a kubelet: volumes (`emptyDir` as temp dirs, `secret` items written with
//! their mode from the Secrets it was given, `configMap` keys as files), `subPath` mounts, the
//! container's `command`/`args`/`env`, init containers first and the main container only when
//! they succeeded, `terminationMessagePath` created empty before the start and read back (at
//! most 4096 bytes) after the exit. What it does differently, because there are no mount
//! namespaces here: a mount path is a directory on this machine, so every mount path (and the
//! termination message path) in the command, args and env values is rewritten to its host
//! directory; the tools image provides only the operator binary (at its image path) and every
//! other program comes from this machine's `PATH` (the builder image stands for this machine).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
};
use kinoite_zfs_operator::jobs::contract::OPERATOR_BINARY;
use tempfile::TempDir;

/// Kubernetes keeps at most this much of a termination message.
const MAX_MESSAGE: usize = 4096;

/// The node: Secrets and ConfigMaps it can mount, the operator binary the tools image holds,
/// and node-level environment (container storage and registry configuration, extra `PATH`).
pub struct Kubelet {
    root: TempDir,
    pub tools_image: String,
    pub binary: PathBuf,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub node_env: Vec<(String, String)>,
    pub path_prefix: Vec<PathBuf>,
    /// Make the builder's termination-message path unwritable (a directory sits there).
    pub unwritable_termination_file: bool,
}

/// One container's run.
#[derive(Debug, Clone)]
pub struct ContainerRun {
    pub name: String,
    pub exit_code: i32,
    pub message: String,
    pub logs: String,
}

/// The pod's run: its status as the kubelet would report it, and each container's logs.
#[derive(Debug, Clone)]
pub struct PodRun {
    pub status: PodStatus,
    pub init: Vec<ContainerRun>,
    pub main: Option<ContainerRun>,
    /// Host directory of each volume (to look into after the run).
    pub volumes: BTreeMap<String, PathBuf>,
}

impl PodRun {
    /// The builder container's run (panics with the init logs when it never started).
    pub fn builder(&self) -> &ContainerRun {
        self.main.as_ref().unwrap_or_else(|| panic!("the builder never started; init containers: {:#?}", self.init))
    }
}

impl Kubelet {
    /// A node where `tools_image` provides the operator `binary` (tests pass
    /// `env!("CARGO_BIN_EXE_kinoite-zfs-operator")`).
    pub fn new(tools_image: &str, binary: &Path) -> Kubelet {
        Kubelet {
            root: tempfile::Builder::new().prefix("kzo-kubelet-").tempdir().expect("kubelet dir"),
            tools_image: tools_image.to_string(),
            binary: binary.to_path_buf(),
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
            node_env: Vec::new(),
            path_prefix: Vec::new(),
            unwritable_termination_file: false,
        }
    }

    /// Runs the Job's pod template once (one pod, `restartPolicy: Never`).
    pub fn run(&self, job: &Job, pod_name: &str) -> PodRun {
        let spec: &PodSpec = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("Job has a pod template");
        let pod_dir = self.root.path().join(pod_name);
        let mut volumes = BTreeMap::new();
        for volume in spec.volumes.iter().flatten() {
            let dir = pod_dir.join("volumes").join(&volume.name);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(secret) = &volume.secret {
                let name = secret.secret_name.as_deref().unwrap_or_default();
                let data = self
                    .secrets
                    .get(name)
                    .unwrap_or_else(|| panic!("pod mounts Secret {name}, which the node does not have"));
                let mode = secret.default_mode.unwrap_or(0o644) as u32;
                let items: Vec<(String, String)> = match &secret.items {
                    Some(items) => items.iter().map(|i| (i.key.clone(), i.path.clone())).collect(),
                    None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
                };
                for (key, path) in items {
                    let bytes = data.get(&key).unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
                    let file = dir.join(path);
                    std::fs::write(&file, bytes).unwrap();
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
                }
            } else if let Some(cm) = &volume.config_map {
                let data = self.config_maps.get(&cm.name).unwrap_or_else(|| panic!("pod mounts ConfigMap {}", cm.name));
                for (key, value) in data {
                    std::fs::write(dir.join(key), value).unwrap();
                }
            } else {
                assert!(volume.empty_dir.is_some(), "volume {} is neither emptyDir, secret nor configMap", volume.name);
            }
            volumes.insert(volume.name.clone(), dir);
        }
        let mut run = PodRun { status: PodStatus::default(), init: Vec::new(), main: None, volumes };
        let mut init_ok = true;
        for container in spec.init_containers.iter().flatten() {
            let result = self.run_container(container, &pod_dir, &run.volumes, false);
            init_ok = result.exit_code == 0;
            run.init.push(result);
            if !init_ok {
                break;
            }
        }
        if init_ok {
            let container = spec.containers.first().expect("a container");
            run.main = Some(self.run_container(container, &pod_dir, &run.volumes, self.unwritable_termination_file));
        }
        let succeeded = init_ok && run.main.as_ref().is_some_and(|m| m.exit_code == 0);
        run.status = PodStatus {
            phase: Some(if succeeded { "Succeeded" } else { "Failed" }.into()),
            init_container_statuses: Some(run.init.iter().map(status).collect()),
            container_statuses: run.main.as_ref().map(|m| vec![status(m)]),
            ..Default::default()
        };
        run
    }

    fn run_container(
        &self,
        c: &Container,
        pod_dir: &Path,
        volumes: &BTreeMap<String, PathBuf>,
        unwritable_termination: bool,
    ) -> ContainerRun {
        let mut mounts: Vec<(String, PathBuf)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                let mut host =
                    volumes.get(&m.name).unwrap_or_else(|| panic!("mount of unknown volume {}", m.name)).clone();
                if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    host = host.join(sub);
                    std::fs::create_dir_all(&host).unwrap();
                }
                (m.mount_path.clone(), host)
            })
            .collect();
        let termination_path = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        let termination_host = pod_dir.join(format!("{}.termination-log", c.name));
        if unwritable_termination {
            std::fs::create_dir_all(&termination_host).unwrap();
        } else {
            std::fs::write(&termination_host, "").unwrap();
        }
        mounts.push((termination_path, termination_host.clone()));
        // Longest mount path first, so `/kzo/push-credentials` wins over a `/kzo` mount.
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let map = |value: &str| -> String {
            for (path, host) in &mounts {
                if value == path {
                    return host.display().to_string();
                }
                if let Some(rest) = value.strip_prefix(&format!("{path}/")) {
                    return host.join(rest).display().to_string();
                }
            }
            value.to_string()
        };
        let command = c.command.clone().expect("builder containers set command");
        let image = c.image.as_deref().unwrap_or_default();
        let program = if image == self.tools_image && command[0] == OPERATOR_BINARY {
            self.binary.display().to_string()
        } else {
            map(&command[0])
        };
        let host_path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(self.path_prefix.iter().cloned().chain(std::env::split_paths(&host_path))).unwrap();
        let home = pod_dir.join(format!("{}.home", c.name));
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = Command::new(&program);
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .envs(self.node_env.iter().map(|(k, v)| (k, v)))
            .args(command[1..].iter().chain(c.args.iter().flatten()).map(|a| map(a)))
            .current_dir(pod_dir);
        for var in c.env.iter().flatten() {
            cmd.env(&var.name, map(var.value.as_deref().unwrap_or_default()));
        }
        let output = cmd.output().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut message = std::fs::read(&termination_host).unwrap_or_default();
        message.truncate(MAX_MESSAGE);
        ContainerRun {
            name: c.name.clone(),
            exit_code: output.status.code().unwrap_or(128),
            message: String::from_utf8_lossy(&message).into_owned(),
            logs: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        }
    }
}

fn status(run: &ContainerRun) -> ContainerStatus {
    ContainerStatus {
        name: run.name.clone(),
        ready: false,
        restart_count: 0,
        image: String::new(),
        image_id: String::new(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: run.exit_code,
                reason: Some(if run.exit_code == 0 { "Completed" } else { "Error" }.into()),
                message: Some(run.message.clone()).filter(|m| !m.is_empty()),
                finished_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
