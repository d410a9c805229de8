//! Writes `__export_glue!` into OUT_DIR with `wit/plugin.wit` inlined as a string literal (see
//! src/lib.rs): the plugin crate runs `generate!` for its own world, and only a literal can carry
//! the WIT there.

use std::path::Path;

fn main() {
    let wit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/plugin.wit");
    println!("cargo:rerun-if-changed={}", wit_path.display());
    let wit = std::fs::read_to_string(&wit_path).expect("reading wit/plugin.wit");
    let glue = r#####"
#[doc(hidden)]
#[macro_export]
macro_rules! __export_glue {
    ($ty:ty, $world:literal, [$($iface:ident),*], { $($with:tt)* }) => {
        #[doc(hidden)]
        mod __plugboard_world {
            // Only the custom section naming this world's imports and exports: every type and
            // export is remapped to the SDK's bindings.
            $crate::__wit_bindgen::generate!({
                world: $world,
                inline: WIT,
                runtime_path: "::plugboard_sdk::__wit_bindgen::rt",
                with: {
                    "plugboard:plugin/types@0.1.4": ::plugboard_sdk::bindings::plugboard::plugin::types,
                    "plugboard:plugin/log@0.1.4": ::plugboard_sdk::bindings::plugboard::plugin::log,
                    "plugboard:plugin/context@0.1.4": ::plugboard_sdk::bindings::plugboard::plugin::context,
                    "plugboard:plugin/kv@0.1.4": ::plugboard_sdk::bindings::plugboard::plugin::kv,
                    "plugboard:plugin/clock@0.1.4": ::plugboard_sdk::bindings::plugboard::plugin::clock,
                    "plugboard:plugin/lifecycle@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::lifecycle,
                    $($with)*
                },
            });
        }
        const _: () = {
            static PLUGIN: $crate::__OnceLock<$ty> = $crate::__OnceLock::new();
            struct PlugboardGlue;
            impl $crate::Instance for PlugboardGlue {
                type P = $ty;
                fn cell() -> &'static $crate::__OnceLock<$ty> {
                    &PLUGIN
                }
            }
            $($crate::__export_glue!(@cabi $iface);)*
        };
    };
    (@cabi lifecycle) => {
        $crate::__export_plugboard_plugin_lifecycle_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::lifecycle);
    };
    (@cabi send) => {
        $crate::__export_plugboard_plugin_send_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::send);
    };
    (@cabi authenticate) => {
        $crate::__export_plugboard_plugin_authenticate_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::authenticate);
    };
    (@cabi authenticate_peer) => {
        $crate::__export_plugboard_plugin_authenticate_peer_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::authenticate_peer);
    };
    (@cabi authenticate_expiring) => {
        $crate::__export_plugboard_plugin_authenticate_expiring_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::authenticate_expiring);
    };
    (@cabi send_packed) => {
        $crate::__export_plugboard_plugin_send_packed_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::send_packed);
    };
    (@cabi send_batch) => {
        $crate::__export_plugboard_plugin_send_batch_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::send_batch);
    };
    (@cabi send_batch_packed) => {
        $crate::__export_plugboard_plugin_send_batch_packed_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::send_batch_packed);
    };
    (@cabi deliver_batch) => {
        $crate::__export_plugboard_plugin_deliver_batch_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::deliver_batch);
    };
    (@cabi redeliver) => {
        $crate::__export_plugboard_plugin_redeliver_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::redeliver);
    };
    (@cabi deliver) => {
        $crate::__export_plugboard_plugin_deliver_0_1_4_cabi!(
            PlugboardGlue with_types_in $crate::bindings::exports::plugboard::plugin::deliver);
    };
}
"#####;
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("glue.rs");
    std::fs::write(
        out,
        glue.replace("inline: WIT", &format!("inline: {wit:?}")),
    )
    .expect("writing glue.rs");
}
