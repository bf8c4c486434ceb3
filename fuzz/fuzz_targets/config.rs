//! The configuration loader on any text: it reports problems, never
//! panics; and what it accepts, `config show` prints as a file that loads
//! back to the same configuration.
#![no_main]

use std::path::Path;

use eniroute::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/eniroute/config.toml");
    match config::check(text, path) {
        Ok(cfg) => {
            let shown = config::render_effective(&cfg);
            match config::check(&shown, path) {
                Ok(again) => assert_eq!(again, cfg, "config show changed it:\n{shown}"),
                Err(e) => panic!("config show printed a file that does not load: {e:?}\n{shown}"),
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                let _ = e.to_string();
            }
        }
    }
});
