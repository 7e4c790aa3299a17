//! `vmhub run`: boot a disk image, or a machine of the library, in QEMU
//! without ever modifying it.
//!
//! A library machine boots from its first disk, materialized once into the
//! library's cache as a dynamic VHD, with its own memory, CPUs and firmware
//! unless options say otherwise.
//!
//! The instance gets a differencing child over the image; vmhub serves the
//! child (and through it the whole chain) on a private Unix socket with its
//! NBD server, because QEMU cannot open differencing VHDs itself, and starts
//! qemu-system-x86_64 on that socket. When QEMU exits (the guest powered off,
//! Ctrl-C, or it failed to start), the server stops and flushes the child.

use crate::output::Progress;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use store::machine::Machine;
use store::{Library, MachineRef};
use vdisk::OpenOptions;

#[derive(Args)]
pub struct RunArgs {
    /// What to boot: a disk image file (a VHD, or a differencing VHD and its
    /// chain), else a machine of the library, NAME[:TAG].
    #[arg(value_name = "IMAGE|NAME[:TAG]")]
    pub image: PathBuf,
    /// Guest memory, such as 512M or 2G [default: the machine's; 512M for an
    /// image file].
    #[arg(long)]
    pub memory: Option<String>,
    /// Virtual CPUs [default: the machine's; 1 for an image file].
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Firmware: SeaBIOS, or OVMF for UEFI guests [default: the machine's;
    /// bios for an image file].
    #[arg(long, value_enum)]
    pub firmware: Option<Firmware>,
    /// Keep the instance's disk afterwards (the default), at --instance,
    /// beside the image, or in the library's instances folder.
    #[arg(long, conflicts_with = "rm")]
    pub keep: bool,
    /// Remove the instance's disk when QEMU exits: nothing of the run remains.
    #[arg(long)]
    pub rm: bool,
    /// Where to create the instance's differencing disk [default: beside the
    /// image, named IMAGE-STEM.run-TIME.vhd; for a library machine
    /// HOME/instances/NAME-TAG-TIME.vhd, with each / of NAME as _].
    #[arg(long, value_name = "FILE")]
    pub instance: Option<PathBuf>,
    /// Accelerator: KVM when it works, else TCG (auto), or one of them.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Where the guest's console goes: the first serial port on this terminal,
    /// or a window with the screen.
    #[arg(long, value_enum, default_value_t = Console::Serial)]
    pub console: Console,
    /// How the disk is attached.
    #[arg(long, value_enum, default_value_t = Bus::Virtio)]
    pub bus: Bus,
    /// The QEMU binary [default: $VMHUB_QEMU, else qemu-system-x86_64].
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// The library, for booting one of its machines.
    #[command(flatten)]
    pub home: crate::library::HomeArg,
    /// More arguments for QEMU, after `--`.
    #[arg(last = true)]
    pub qemu_args: Vec<String>,
}

/// What `vmhub run` boots.
enum Source {
    /// A VHD file (perhaps the top of a chain).
    Image(PathBuf),
    /// A machine of the library.
    Machine {
        library: Library,
        reference: MachineRef,
        machine: Box<Machine>,
    },
}

/// The settings a boot uses: the options given, else the machine's, else
/// those for an image file.
struct Settings {
    memory: String,
    cpus: u32,
    firmware: Firmware,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Console {
    Serial,
    Window,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Bus {
    Virtio,
    Ide,
    Nvme,
}

/// Runs `vmhub run` and returns the process exit code.
pub fn run(args: RunArgs) -> ExitCode {
    match boot(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vmhub: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Where the OVMF firmware may be, in the order tried.
const OVMF: &[&str] = &[
    "/usr/share/ovmf/OVMF.fd",
    "/usr/share/OVMF/OVMF.fd",
    "/usr/share/qemu/OVMF.fd",
    "/usr/share/edk2/ovmf/OVMF.fd",
];

fn qemu_binary(args: &RunArgs) -> PathBuf {
    args.qemu
        .clone()
        .or_else(|| std::env::var_os("VMHUB_QEMU").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// What the argument names: an existing file is an image; anything else must
/// be a machine of the library.
fn source(args: &RunArgs) -> Result<Source> {
    let arg = &args.image;
    if arg.exists() && !arg.is_dir() {
        // The instance disk is a differencing VHD, whose parent must be a VHD.
        match vdisk::sniff(arg).with_context(|| format!("cannot boot {}", arg.display()))? {
            vdisk::Format::Vhd => {}
            other => bail!(
                "{}: a {} image; vmhub run boots VHDs (the instance writes to a differencing VHD over the image): convert it first with `vmhub img convert {} {}`, or import it into the library with `vmhub import {} NAME[:TAG]`",
                arg.display(),
                other.name(),
                arg.display(),
                arg.with_extension("vhd").display(),
                arg.display()
            ),
        }
        return Ok(Source::Image(arg.clone()));
    }
    let reference = match arg.to_str().map(str::parse::<MachineRef>) {
        Some(Ok(r)) => r,
        Some(Err(e)) => bail!(
            "{}: no such image file, and not a machine name either ({e})",
            arg.display()
        ),
        None => bail!(
            "{}: no such image file, and not a machine name either",
            arg.display()
        ),
    };
    let library = args.home.open()?;
    let machine = match library.resolve(&reference) {
        Ok((_, _, m)) => m,
        Err(store::Error::NotFound(_)) => bail!(
            "{}: no such image file, and no machine {reference} in the library {} (`vmhub ls` lists them, `vmhub import` adds one)",
            arg.display(),
            library.home().display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot boot {reference}")),
    };
    if !matches!(machine.architecture.as_str(), "x86_64" | "i386") {
        bail!(
            "{reference}: an {} machine; vmhub run boots x86 machines (x86_64, i386)",
            machine.architecture
        );
    }
    Ok(Source::Machine {
        library,
        reference,
        machine: Box::new(machine),
    })
}

fn settings(args: &RunArgs, source: &Source) -> Settings {
    let machine = match source {
        Source::Machine { machine, .. } => Some(machine),
        Source::Image(_) => None,
    };
    Settings {
        memory: args.memory.clone().unwrap_or_else(|| match machine {
            Some(m) => qemu_memory(m.memory),
            None => "512M".into(),
        }),
        cpus: args.cpus.or(machine.map(|m| m.cpus)).unwrap_or(1),
        firmware: args.firmware.unwrap_or(match machine.map(|m| m.firmware) {
            Some(store::machine::Firmware::Uefi) => Firmware::Uefi,
            Some(store::machine::Firmware::Bios) | None => Firmware::Bios,
        }),
    }
}

/// A memory size in bytes as QEMU's `-m` takes it: MiB, rounded up.
fn qemu_memory(bytes: u64) -> String {
    format!("{}M", bytes.div_ceil(1 << 20).max(1))
}

/// The VHD the instance goes over: the image, or the machine's first disk
/// materialized in the library's cache (once; later runs reuse it).
fn base_image(source: &Source) -> Result<PathBuf> {
    match source {
        Source::Image(p) => Ok(p.clone()),
        Source::Machine {
            library,
            reference,
            machine,
        } => {
            if machine.disks.len() > 1 {
                eprintln!(
                    "vmhub: note: {reference} has {} disks; vmhub run attaches the first, the boot disk",
                    machine.disks.len()
                );
            }
            let mut progress = Progress::new(false, "unpack");
            let path = library
                .base_image(reference, machine, 0, &mut |d, t| progress.set(d, t))
                .with_context(|| format!("cannot unpack the disk of {reference}"))?;
            progress.finish();
            Ok(path)
        }
    }
}

/// Boots the image; returns the exit code to give (0 when QEMU exited cleanly).
fn boot(args: &RunArgs) -> Result<u8> {
    let source = source(args)?;
    let settings = settings(args, &source);
    let qemu = qemu_binary(args);
    let version = Command::new(&qemu)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !version.is_ok_and(|s| s.success()) {
        bail!(
            "{}: cannot run it; install QEMU (Debian: qemu-system-x86) or name it with --qemu",
            qemu.display()
        );
    }
    let bios = match settings.firmware {
        Firmware::Bios => None,
        Firmware::Uefi => Some(
            OVMF.iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .context("UEFI firmware (OVMF.fd) not found; install it (Debian: ovmf)")?,
        ),
    };
    let private = tempfile::Builder::new()
        .prefix("vmhub-run.")
        .tempdir()
        .context("cannot create a private folder for the NBD socket")?;
    let accel = match args.accel {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
        Accel::Auto => match probe_kvm(&qemu, private.path()) {
            Ok(()) => "kvm",
            Err(why) => {
                eprintln!("vmhub: KVM is not usable here ({why}); using TCG, which is slower");
                "tcg"
            }
        },
    };

    // The instance: a differencing child over the image, which is only read.
    let base = base_image(&source)?;
    let instance = match (&args.instance, args.rm) {
        (Some(p), _) => p.clone(),
        (None, true) => private.path().join("instance.vhd"),
        (None, false) => default_instance(&source)?,
    };
    vdisk::create_child(&instance, &base, 2 << 20, false)
        .with_context(|| format!("cannot create the instance disk {}", instance.display()))?;
    if let Source::Machine { reference, .. } = &source {
        eprintln!(
            "vmhub: {reference}: memory {}, {} CPU{}, {} firmware",
            settings.memory,
            settings.cpus,
            if settings.cpus == 1 { "" } else { "s" },
            match settings.firmware {
                Firmware::Bios => "BIOS",
                Firmware::Uefi => "UEFI",
            }
        );
    }
    let outcome = serve_and_boot(
        args,
        &settings,
        &qemu,
        accel,
        bios.as_deref(),
        &instance,
        private.path(),
    );
    if args.rm {
        if let Err(e) = std::fs::remove_file(&instance) {
            eprintln!(
                "vmhub: warning: cannot remove the instance disk {}: {e}",
                instance.display()
            );
        }
    } else if matches!(source, Source::Machine { .. }) {
        // The cached base is shared by every run of the machine: never merge
        // into it.
        eprintln!(
            "vmhub: the instance's changes are in {} (boot it again with `vmhub run {0}`, keep them as a machine with `vmhub import {0} NAME[:TAG]`)",
            instance.display()
        );
    } else {
        eprintln!(
            "vmhub: the instance's changes are in {} (boot it again with `vmhub run {0}`, fold them into the image with `vmhub img merge {0}`)",
            instance.display()
        );
    }
    outcome
}

/// The default instance disk: beside an image, `STEM.run-SECONDS.vhd`; for a
/// library machine, `HOME/instances/NAME-TAG-SECONDS.vhd`, beside the cache
/// so that the relative parent locator keeps working when the library folder
/// moves.
fn default_instance(source: &Source) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (dir, stem) = match source {
        Source::Image(image) => {
            let stem = image
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "disk".into());
            let dir = match image.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (dir, format!("{stem}.run-{secs}"))
        }
        Source::Machine {
            library, reference, ..
        } => {
            let dir = library.home().join("instances");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
            let name = reference.name.replace('/', "_");
            (dir, format!("{name}-{}-{secs}", reference.tag))
        }
    };
    for n in 0..100u32 {
        let name = if n == 0 {
            format!("{stem}.vhd")
        } else {
            format!("{stem}-{n}.vhd")
        };
        let p = dir.join(name);
        if !p.exists() {
            return Ok(p);
        }
    }
    bail!("{}: no free name for an instance disk", dir.display())
}

fn serve_and_boot(
    args: &RunArgs,
    settings: &Settings,
    qemu: &Path,
    accel: &str,
    bios: Option<&Path>,
    instance: &Path,
    private: &Path,
) -> Result<u8> {
    let disk = vdisk::open(instance, OpenOptions { writable: true })
        .with_context(|| format!("cannot open {}", instance.display()))?;
    let socket = private.join("nbd.sock");
    let listener = nbd::Listener::unix(&socket).context("cannot listen for QEMU")?;
    let server = crate::nbd::server_for(disk, instance, "disk", false);
    let stop = server.stop_handle();

    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", &format!("pc,accel={accel}")])
        .args(["-m", &settings.memory])
        .args(["-smp", &settings.cpus.to_string()])
        .arg("-blockdev")
        .arg(format!(
            "driver=nbd,node-name=disk0,server.type=unix,server.path={},export=disk",
            socket.display()
        ))
        .arg("-device")
        .arg(match args.bus {
            Bus::Virtio => "virtio-blk-pci,drive=disk0,bootindex=0",
            Bus::Ide => "ide-hd,drive=disk0,bus=ide.0,bootindex=0",
            Bus::Nvme => "nvme,drive=disk0,serial=vmhub,bootindex=0",
        });
    if let Some(b) = bios {
        cmd.arg("-bios").arg(b);
    }
    if args.console == Console::Serial {
        cmd.args(["-display", "none", "-serial", "mon:stdio"]);
    }
    cmd.args(&args.qemu_args);

    std::thread::scope(|scope| -> Result<u8> {
        let served = scope.spawn(|| server.run(&listener));
        let status = launch(cmd);
        stop.stop();
        let served = served
            .join()
            .map_err(|_| anyhow::anyhow!("the NBD server failed"))?;
        served.context("the NBD server failed")?;
        let status = status?;
        match status.code() {
            Some(0) => Ok(0),
            Some(c) => {
                eprintln!("vmhub: {} exited with status {c}", qemu.display());
                Ok(u8::try_from(c).unwrap_or(1).max(1))
            }
            None => {
                eprintln!("vmhub: {} was stopped by a signal", qemu.display());
                Ok(1)
            }
        }
    })
}

/// Starts QEMU and waits for it. Ctrl-C or SIGTERM sent to vmhub alone ends
/// QEMU (which the terminal's Ctrl-C reaches by itself).
fn launch(mut cmd: Command) -> Result<std::process::ExitStatus> {
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let pid = child.id();
    let _ = ctrlc::set_handler(move || {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    });
    let mut child = child;
    child.wait().context("waiting for QEMU")
}

/// Whether KVM runs guest code here. A tiny firmware enters 32-bit protected
/// mode, returns through an IRET and writes to QEMU's exit port, which must
/// make QEMU exit with code 3 within a few seconds. Neither the device node
/// nor a QEMU that starts proves anything: on nested machines KVM may fail
/// only once the guest leaves real mode (an emulation failure, and a hang).
fn probe_kvm(qemu: &Path, dir: &Path) -> std::result::Result<(), String> {
    let dev = Path::new("/dev/kvm");
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_err()
    {
        return Err("/dev/kvm cannot be opened".into());
    }
    let fw = probe_firmware();
    let fw_path = dir.join("kvm-probe.bin");
    std::fs::write(&fw_path, fw).map_err(|e| format!("{}: {e}", fw_path.display()))?;
    let mut child = Command::new(qemu)
        .args([
            "-machine",
            "pc,accel=kvm",
            "-nodefaults",
            "-display",
            "none",
        ])
        .arg("-bios")
        .arg(&fw_path)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.code() == Some(3) => return Ok(()),
            Ok(Some(s)) => return Err(format!("a test guest ended with {s}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("a test guest hung".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The probe's 64 KiB firmware, mapped at 0xF0000. Its code, hand-assembled:
///
/// ```text
/// F000:FFF0  jmp far F000:0000                 ; the reset vector
/// F000:0000  cli
///            lgdt cs:[0x220]                   ; GDT at 0xF0200
///            mov eax, cr0 / or al, 1 / mov cr0, eax
///            jmp far dword 0x08:0xF0100        ; into 32-bit code
/// 0xF0100    mov ax, 0x10 / mov ds, ax / mov ss, ax / mov esp, 0x7000
///            pushfd / push 0x08 / push 0xF0116 / iretd
/// 0xF0116    mov al, 1 / out 0xF4, al / hlt / jmp $-1
/// ```
fn probe_firmware() -> Vec<u8> {
    let mut fw = vec![0u8; 64 << 10];
    let real: [u8; 23] = [
        0xfa, 0x2e, 0x0f, 0x01, 0x16, 0x20, 0x02, 0x0f, 0x20, 0xc0, 0x0c, 0x01, 0x0f, 0x22, 0xc0,
        0x66, 0xea, 0x00, 0x01, 0x0f, 0x00, 0x08, 0x00,
    ];
    fw[..real.len()].copy_from_slice(&real);
    let protected: [u8; 29] = [
        0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x70, 0x00, 0x00, 0x9c, 0x6a,
        0x08, 0x68, 0x16, 0x01, 0x0f, 0x00, 0xcf, 0xb0, 0x01, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd,
    ];
    fw[0x100..0x100 + protected.len()].copy_from_slice(&protected);
    // Null, flat code and flat data descriptors, and the GDT register.
    let gdt: [u8; 24] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0x9a, 0xcf, 0, 0xff, 0xff, 0, 0, 0, 0x92,
        0xcf, 0,
    ];
    fw[0x200..0x218].copy_from_slice(&gdt);
    fw[0x220..0x226].copy_from_slice(&[0x17, 0x00, 0x00, 0x02, 0x0f, 0x00]);
    fw[0xfff0..0xfff5].copy_from_slice(&[0xea, 0x00, 0x00, 0x00, 0xf0]);
    fw
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_probe_firmware_is_the_one_assembled_by_hand() {
        let fw = super::probe_firmware();
        assert_eq!(fw.len(), 65536);
        // The far jump into 32-bit code lands on it, and the IRET returns to
        // the exit port write.
        assert_eq!(&fw[0x11..0x15], &0x000f_0100u32.to_le_bytes());
        assert_eq!(&fw[0x111..0x115], &0x000f_0116u32.to_le_bytes());
        assert_eq!(&fw[0x116..0x11a], &[0xb0, 0x01, 0xe6, 0xf4]);
    }
}
