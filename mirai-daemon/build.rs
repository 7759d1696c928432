//! Exports the C ABI's symbols from the executable, so that plugins loaded with
//! `--evaluator plugin` can call `mirai_output_set` and friends without linking libmirai.
fn main() {
    println!("cargo:rustc-link-arg-bins=-rdynamic");
}
