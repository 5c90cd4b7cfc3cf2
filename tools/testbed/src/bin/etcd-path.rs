//! Prints the path of the etcd binary vendored by `etcd-bin-vendored`, so that
//! hack/control-plane runs exactly the etcd the Rust tests run.

fn main() {
    match testbed::bins::etcd() {
        Ok(path) => println!("{}", path.display()),
        Err(e) => {
            eprintln!("etcd-path: {e}");
            std::process::exit(1);
        }
    }
}
