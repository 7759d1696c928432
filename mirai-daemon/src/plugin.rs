//! The plugin evaluator: a shared library exporting `mirai_plugin_evaluate` (and optionally
//! `mirai_plugin_init`), with the signatures declared in `mirai.h`. The library may call
//! `mirai_output_set` and `mirai_interrupt_*` without linking libmirai: this executable exports
//! them.

use std::path::Path;

use mirai::{CEvaluator, mirai_evaluate_fn, mirai_evaluator, mirai_init_fn};
use mirai_core::{Daemon, DaemonOptions, ExitCode};

pub fn run(url: &str, options: &DaemonOptions, path: &Path) -> Result<ExitCode, String> {
    // SAFETY: loading a library runs its initialisers; the user asked for this library.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load plugin {}: {e}", path.display()))?;
    // SAFETY: the symbol has the signature mirai.h declares for plugins.
    let evaluate: mirai_evaluate_fn =
        unsafe { lib.get::<mirai::mirai_plugin_evaluate_fn>(b"mirai_plugin_evaluate\0") }
            .map(|f| Some(*f))
            .map_err(|e| format!("plugin {} does not export mirai_plugin_evaluate: {e}", path.display()))?;
    // SAFETY: as above, for the optional init entry point.
    let init: mirai_init_fn = unsafe { lib.get(b"mirai_plugin_init\0") }.ok().and_then(|f| *f);
    let ev =
        mirai_evaluator { userdata: std::ptr::null_mut(), init, evaluate, cleanup: None, interrupt: None };
    let result = Daemon::run(url, options.clone(), &mut CEvaluator::new(&ev)).map_err(|e| e.to_string());
    drop(lib);
    result
}
