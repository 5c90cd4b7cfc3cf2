//! Writes a fresh service-account key pair (ECDSA P-256; private PKCS#8 and public
//! SPKI PEM, mode 0600) to the given paths, so hack/control-plane needs no openssl.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

fn write(path: &PathBuf, contents: &str) {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()));
    if let Err(e) = result {
        eprintln!("sa-keygen: {}: {e}", path.display());
        std::process::exit(1);
    }
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [private_path, public_path] = args.as_slice() else {
        eprintln!("usage: sa-keygen PRIVATE_KEY_PATH PUBLIC_KEY_PATH");
        std::process::exit(2);
    };
    let (private, public) = testbed::generate_service_account_keys();
    write(private_path, &private);
    write(public_path, &public);
}
