//! The Debian package that `scripts/package` builds, made here from the test build's binary:
//! what it holds, lintian's verdict, an install into a throwaway root whose binary answers
//! `--version`, and a removal that leaves nothing behind. Skipped (saying so) where dpkg is
//! missing, on a machine that is not Debian's kind.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn files_under(root: &Path, skip: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            // The package database and the folders that hold it are the throwaway root's own.
            if p.starts_with(skip) || skip.starts_with(&p) {
                if !p.starts_with(skip) {
                    dirs.push(p);
                }
                continue;
            }
            if p.is_dir() {
                dirs.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn the_debian_package_holds_everything_installs_answers_and_removes_cleanly() {
    if !(have("dpkg-deb") && have("dpkg-shlibdeps") && have("rsvg-convert")) {
        eprintln!("skipped: dpkg-deb, dpkg-shlibdeps or rsvg-convert missing (run scripts/setup)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(repo.join("scripts/package"))
        .args(["--binary", common::bin().to_str().unwrap(), "--out", out.path().to_str().unwrap(), "--fast"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "scripts/package failed:\n{err}");
    let deb = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(deb.is_file(), "{deb:?}");

    let list = Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let mut want = vec![
        "./usr/bin/artculture".to_string(),
        "./usr/share/applications/artculture.desktop".into(),
        "./usr/share/icons/hicolor/scalable/apps/artculture.svg".into(),
        "./usr/share/man/man1/artculture.1.gz".into(),
        "./usr/share/man/man1/artculture-predict.1.gz".into(),
        "./usr/share/man/man1/artculture-import-met.1.gz".into(),
        "./usr/share/bash-completion/completions/artculture".into(),
        "./usr/share/zsh/vendor-completions/_artculture".into(),
        "./usr/share/fish/vendor_completions.d/artculture.fish".into(),
        "./usr/share/doc/artculture/copyright".into(),
        "./usr/share/doc/artculture/changelog.Debian.gz".into(),
    ];
    want.extend([48, 64, 128, 256, 512].map(|s| format!("./usr/share/icons/hicolor/{s}x{s}/apps/artculture.png")));
    for w in &want {
        assert!(list.lines().any(|l| l.ends_with(w.as_str())), "{w} is not in the package:\n{list}");
    }
    let info = Command::new("dpkg-deb").arg("-I").arg(&deb).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Depends: ") && info.contains("libc6") && info.contains("Package: artculture"), "{info}");

    // Unpacked: the desktop entry validates and names the image types; the copyright names CC0.
    let x = tempfile::tempdir().unwrap();
    assert!(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()).status().unwrap().success());
    let desktop = x.path().join("usr/share/applications/artculture.desktop");
    assert!(std::fs::read_to_string(&desktop).unwrap().contains("MimeType=image/jpeg;image/png;"));
    if have("desktop-file-validate") {
        let v = Command::new("desktop-file-validate").arg(&desktop).output().unwrap();
        assert!(v.status.success() && v.stdout.is_empty(), "{}", String::from_utf8_lossy(&v.stdout));
    }
    let copyright = std::fs::read_to_string(x.path().join("usr/share/doc/artculture/copyright")).unwrap();
    assert!(copyright.contains("CC0-1.0") && copyright.contains("Art Institute of Chicago"));
    if have("lintian") {
        let l = Command::new("lintian").arg(&deb).output().unwrap();
        let text = String::from_utf8_lossy(&l.stdout);
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
        assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    }

    // Installed into a throwaway root, as dpkg installs it (dependencies are not there: forced).
    let root = tempfile::tempdir().unwrap();
    let admin = root.path().join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(d)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let o = Command::new("dpkg")
            .arg(format!("--root={}", root.path().display()))
            .args(["--force-not-root", "--force-depends", "--force-script-chrootless", "--no-triggers"])
            .args(args)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        assert!(o.status.success(), "dpkg {args:?}:\n{}", String::from_utf8_lossy(&o.stderr));
    };
    dpkg(&["--install", deb.to_str().unwrap()]);
    let v = Command::new(root.path().join("usr/bin/artculture")).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success() && version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    assert!(root.path().join("usr/share/man/man1/artculture-merge.1.gz").is_file());
    dpkg(&["--purge", "artculture"]);
    let left = files_under(root.path(), &admin);
    assert!(left.is_empty(), "left behind after removal: {left:?}");
}
