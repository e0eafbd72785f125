//! `Settings`: every knob of the facade, from defaults, a TOML file and the environment.
