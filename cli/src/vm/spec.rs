//! What a VM is made of, as a user (or a topology file) asks for it, and
//! the checks that need nothing but the spec itself.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::VmError;
use super::size;

/// Longest VM name (Azure allows 64 for Linux VMs; one less keeps socket
/// paths short).
pub const MAX_NAME: usize = 63;
/// Most vCPUs (nimbus-vmm's limit).
pub const MAX_VCPUS: u8 = vmm::config::MAX_VCPUS;
/// Least memory (nimbus-vmm's limit), MiB.
pub const MIN_MEMORY_MIB: u64 = vmm::memory::MIN_MEMORY >> 20;
/// Most tags on one VM (Azure's limit).
pub const MAX_TAGS: usize = 50;

/// The guest image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Image {
    /// The default guest images: vmlinux + initramfs (agent as PID 1).
    #[default]
    Default,
    /// The default kernel booting a per-VM copy of the default rootfs.ext4
    /// as /dev/vda.
    DefaultRootfs,
    /// The default kernel booting a per-VM copy of this root file system.
    Rootfs {
        /// The image to copy.
        path: PathBuf,
    },
    /// Explicit files; with `rootfs`, a per-VM copy of it is /dev/vda.
    Files {
        /// ELF vmlinux or bzImage.
        kernel: PathBuf,
        /// Initramfs.
        #[serde(default)]
        initrd: Option<PathBuf>,
        /// Root file system image.
        #[serde(default)]
        rootfs: Option<PathBuf>,
    },
}

/// A data disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DiskSpec {
    /// A new sparse raw disk in the VM's directory, formatted ext4 and
    /// mounted in the guest at `/mnt/data<N>` (N counts data disks from 0).
    New {
        /// Size in MiB.
        size_mib: u64,
    },
    /// An existing image file, attached as it is.
    Attach {
        /// The image.
        path: PathBuf,
        /// Read-only for the guest.
        #[serde(default)]
        read_only: bool,
        /// Mount it (ext4) here in the guest.
        #[serde(default)]
        mount: Option<String>,
    },
}

/// Everything a VM is created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Unique name.
    pub name: String,
    /// Guest image.
    #[serde(default)]
    pub image: Image,
    /// The named size the vCPUs and memory came from, if any.
    #[serde(default)]
    pub size: Option<String>,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Data disks, in order.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// netd NIC names: eth0, eth1, ... in order.
    #[serde(default)]
    pub nics: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Extra guest kernel parameters.
    #[serde(default)]
    pub cmdline: Option<String>,
}

impl VmSpec {
    /// A VM of `name` with the default image and the `Lab1` size.
    pub fn new(name: &str) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            image: Image::Default,
            size: None,
            vcpus: 1,
            memory_mib: 128,
            disks: Vec::new(),
            nics: Vec::new(),
            tags: BTreeMap::new(),
            cmdline: None,
        }
    }

    /// Sets vCPUs and memory from a named size.
    pub fn with_size(mut self, name: &str) -> Result<VmSpec, VmError> {
        let s = size::find(name).ok_or_else(|| VmError::Invalid {
            vm: self.name.clone(),
            field: "size",
            reason: format!("unknown size {name:?}; sizes: {}", size::names()),
        })?;
        self.size = Some(s.name.to_string());
        self.vcpus = s.vcpus;
        self.memory_mib = s.memory_mib;
        Ok(self)
    }

    fn invalid(&self, field: &'static str, reason: impl Into<String>) -> VmError {
        VmError::Invalid {
            vm: self.name.clone(),
            field,
            reason: reason.into(),
        }
    }

    /// Checks what needs nothing but the spec: name, sizes, disks, NIC
    /// names, tags, command line.
    pub fn validate(&self) -> Result<(), VmError> {
        validate_name(&self.name)?;
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(self.invalid(
                "vcpus",
                format!("{}: must be between 1 and {MAX_VCPUS}", self.vcpus),
            ));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(self.invalid(
                "memory",
                format!(
                    "{} MiB: must be at least {MIN_MEMORY_MIB} MiB",
                    self.memory_mib
                ),
            ));
        }
        let root = usize::from(self.has_root_disk());
        let devices = root + self.disks.len() + self.nics.len();
        let max = vmm::virtio_devices::VIRTIO_IRQS.len();
        if devices > max {
            return Err(self.invalid(
                "disks/nics",
                format!("{devices} virtio devices (root disk, data disks, NICs): at most {max}"),
            ));
        }
        for disk in &self.disks {
            match disk {
                DiskSpec::New { size_mib } if *size_mib < 16 => {
                    return Err(self.invalid(
                        "disk",
                        format!("{size_mib} MiB: a new disk needs at least 16 MiB for ext4"),
                    ))
                }
                DiskSpec::Attach {
                    mount: Some(m),
                    path,
                    ..
                } if !valid_mount(m) => {
                    return Err(self.invalid(
                        "disk",
                        format!(
                            "{}: mount={m:?} is not an absolute path of plain components",
                            path.display()
                        ),
                    ))
                }
                _ => {}
            }
        }
        for (i, nic) in self.nics.iter().enumerate() {
            if nic.is_empty() {
                return Err(self.invalid("nic", "empty NIC name"));
            }
            if self.nics[..i].contains(nic) {
                return Err(self.invalid("nic", format!("{nic} is listed twice")));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(self.invalid(
                "tag",
                format!("{} tags: at most {MAX_TAGS}", self.tags.len()),
            ));
        }
        for key in self.tags.keys() {
            if key.is_empty()
                || key.len() > 512
                || key.contains(['<', '>', '%', '&', '\\', '?', '/'])
            {
                return Err(self.invalid(
                    "tag",
                    format!("key {key:?}: 1-512 characters, none of < > % & \\ ? /"),
                ));
            }
        }
        if let Some(extra) = &self.cmdline {
            if extra.contains(['\0', '\n']) {
                return Err(self.invalid("cmdline", "contains a NUL or a newline"));
            }
        }
        Ok(())
    }

    /// Whether the VM boots from a root disk (/dev/vda).
    pub fn has_root_disk(&self) -> bool {
        matches!(
            &self.image,
            Image::DefaultRootfs
                | Image::Rootfs { .. }
                | Image::Files {
                    rootfs: Some(_),
                    ..
                }
        )
    }
}

fn valid_mount(m: &str) -> bool {
    m.starts_with('/')
        && m.len() > 1
        && m.split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// VM names: 1-63 characters, letters, digits, `-`, `_`, `.`, starting
/// with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), VmError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(VmError::Invalid {
            vm: name.to_string(),
            field: "name",
            reason: format!(
                "1-{MAX_NAME} letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        })
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("tag {text:?}: expected KEY=VALUE")),
    }
}

/// Parses `PATH[,ro][,mount=/DIR]` (an existing image to attach).
pub fn parse_attach(text: &str) -> Result<DiskSpec, String> {
    let mut parts = text.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("attach-disk {text:?}: expected PATH[,ro][,mount=/DIR]"))?;
    let (mut read_only, mut mount) = (false, None);
    for part in parts {
        match part.split_once('=') {
            None if part == "ro" => read_only = true,
            Some(("mount", m)) => mount = Some(m.to_string()),
            _ => {
                return Err(format!(
                    "attach-disk {text:?}: unknown option {part:?}; expected ro or mount=/DIR"
                ))
            }
        }
    }
    Ok(DiskSpec::Attach {
        path: PathBuf::from(path),
        read_only,
        mount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &VmSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_plain_spec_is_valid_and_round_trips() {
        let mut s = VmSpec::new("web-1").with_size("b1ls").unwrap();
        s.disks.push(DiskSpec::New { size_mib: 64 });
        s.disks
            .push(parse_attach("/img/x.raw,ro,mount=/srv/x").unwrap());
        s.nics.push("web-1-nic".into());
        s.tags.insert("env".into(), "lab".into());
        s.validate().unwrap();
        assert_eq!((s.vcpus, s.memory_mib), (1, 512));
        assert_eq!(s.size.as_deref(), Some("B1ls"));
        let json = serde_json::to_string(&s).unwrap();
        let back: VmSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        // Defaults keep small specs small.
        let small: VmSpec =
            serde_json::from_str(r#"{"name":"a","vcpus":1,"memory_mib":64}"#).unwrap();
        assert_eq!(small.image, Image::Default);
        small.validate().unwrap();
    }

    #[test]
    fn names_what_is_wrong() {
        for bad in ["", "-x", "a b", "a/b", "..", &"x".repeat(64), "é"] {
            let e = err(&VmSpec::new(bad));
            assert!(e.contains("name:"), "{bad}: {e}");
        }
        let e = VmSpec::new("a").with_size("B9z").unwrap_err().to_string();
        assert!(
            e.contains("unknown size \"B9z\"") && e.contains("B1s"),
            "{e}"
        );
        let mut s = VmSpec::new("a");
        s.vcpus = 0;
        assert!(err(&s).contains("vcpus: 0"));
        let mut s = VmSpec::new("a");
        s.memory_mib = 8;
        assert!(err(&s).contains("memory: 8 MiB"));
        let mut s = VmSpec::new("a");
        s.disks.push(DiskSpec::New { size_mib: 1 });
        assert!(err(&s).contains("at least 16 MiB"));
        let mut s = VmSpec::new("a");
        s.disks.push(parse_attach("/x,mount=/a/../b").unwrap());
        assert!(err(&s).contains("mount="));
        let mut s = VmSpec::new("a");
        s.nics = vec!["n".into(), "n".into()];
        assert!(err(&s).contains("listed twice"));
        let mut s = VmSpec::new("a");
        s.nics = (0..11).map(|i| format!("n{i}")).collect();
        assert!(err(&s).contains("virtio devices"));
        let mut s = VmSpec::new("a");
        s.tags.insert("a/b".into(), "v".into());
        assert!(err(&s).contains("tag: key"));
        let mut s = VmSpec::new("a");
        s.cmdline = Some("x\ny".into());
        assert!(err(&s).contains("cmdline"));
    }

    #[test]
    fn option_strings() {
        assert_eq!(parse_tag("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_tag("=x").is_err());
        assert!(parse_tag("novalue").is_err());
        assert_eq!(
            parse_attach("/d.img").unwrap(),
            DiskSpec::Attach {
                path: "/d.img".into(),
                read_only: false,
                mount: None
            }
        );
        assert!(parse_attach("").is_err());
        assert!(parse_attach("/d.img,rw")
            .unwrap_err()
            .contains("unknown option"));
    }
}
