//! Guest-side helpers for `/init`: what the guest has, and the power button.

use std::fs::File;
use std::io::Read;

/// CPUs online in the guest.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// RAM the firmware handed the kernel, in MiB, from `/sys/firmware/memmap`.
///
/// Unlike `MemTotal` this is close to what the VM was given (only firmware
/// holes are missing), so a test can compare it with the spec.
pub fn firmware_ram_mib() -> u64 {
    let mut bytes: u64 = 0;
    let Ok(entries) = std::fs::read_dir("/sys/firmware/memmap") else {
        return 0;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if read("type").trim() != "System RAM" {
            continue;
        }
        let hex = |s: String| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
        if let (Some(start), Some(end)) = (hex(read("start")), hex(read("end"))) {
            bytes += end.saturating_sub(start) + 1;
        }
    }
    // Round to the nearest MiB: the firmware keeps the first 640 KiB hole.
    (bytes + 512 * 1024) / (1024 * 1024)
}

/// The line `/init` prints for readiness: `cpus=N ram_mib=M`.
pub fn sysinfo_line() -> String {
    format!("cpus={} ram_mib={}", online_cpus(), firmware_ram_mib())
}

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: timeval (16), type, code, value.
const INPUT_EVENT_SIZE: usize = 24;

/// Written once every input device is open: `/init` waits for it before it
/// says the guest is ready, so a host that powers the guest off right after
/// readiness is heard.
pub const POWER_BUTTON_READY: &str = "/run/ferry-powerbutton.ready";

/// Waits for the ACPI power button (QEMU's `system_powerdown`) on every
/// input device, then syncs and powers the guest off. Never returns unless no
/// input device exists.
pub fn watch_power_button() -> std::io::Result<()> {
    let mut devices = Vec::new();
    for entry in std::fs::read_dir("/dev/input")?.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("event"))
        {
            devices.push(File::open(&path)?);
        }
    }
    if devices.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no input devices",
        ));
    }
    let _ = std::fs::create_dir_all("/run");
    std::fs::write(POWER_BUTTON_READY, b"")?;
    let watchers: Vec<_> = devices
        .into_iter()
        .map(|f| std::thread::spawn(move || watch_device(f)))
        .collect();
    for w in watchers {
        let _ = w.join();
    }
    Ok(())
}

fn watch_device(mut f: File) -> std::io::Result<()> {
    let mut ev = [0u8; INPUT_EVENT_SIZE];
    loop {
        f.read_exact(&mut ev)?;
        let kind = u16::from_le_bytes([ev[16], ev[17]]);
        let code = u16::from_le_bytes([ev[18], ev[19]]);
        let value = i32::from_le_bytes([ev[20], ev[21], ev[22], ev[23]]);
        if kind == EV_KEY && code == KEY_POWER && value == 1 {
            println!("FERRY-GUEST power button pressed: powering off");
            power_off();
        }
    }
}

fn power_off() {
    // SAFETY: sync() and reboot() take no pointers; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
