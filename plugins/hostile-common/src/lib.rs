//! What the hostile test plugins (`plugins/hostile-*`, tests only) share: a plugin without
//! config that asks for every header (no body) on both hooks, and, for the plugins that misbehave
//! the same way in every hook, those hooks and the export.
//!
//! A plugin crate depends on this crate and on `plugboard-sdk` (the export macro names it).

#[doc(hidden)]
pub use plugboard_sdk as __sdk;

/// The manifest of every hostile plugin: all headers, no body, on `on-send` and `filter`.
pub fn manifest() -> plugboard_sdk::Manifest {
    plugboard_sdk::Manifest {
        send: plugboard_sdk::Needs::all_headers(),
        deliver: plugboard_sdk::Needs::all_headers(),
    }
}

/// `hostile_plugin!(struct Name);` defines the plugin type `Name` (no config, [`manifest`]);
/// its hooks are the caller's to write and export (with `plugboard_sdk::export_full!`).
///
/// `hostile_plugin!(struct Name, every_hook: f);` also makes every hook (authenticate, on-send,
/// prepare-subscription, filter, on-redeliver) return `f()`, where `f<T>() -> T` never returns
/// normally, and exports `Name` as a component of world `full-with-redeliver`.
#[macro_export]
macro_rules! hostile_plugin {
    (struct $name:ident) => {
        /// The plugin (no per-instance state).
        pub struct $name;

        impl $crate::__sdk::Plugin for $name {
            type Config = $crate::__sdk::NoConfig;

            fn new(_config: Self::Config) -> Result<Self, String> {
                Ok($name)
            }

            fn manifest(&self) -> $crate::__sdk::Manifest {
                $crate::manifest()
            }
        }
    };
    (struct $name:ident, every_hook: $hostile:path) => {
        $crate::hostile_plugin!(struct $name);

        impl $crate::__sdk::Authenticator for $name {
            fn authenticate(&self, _request: &$crate::__sdk::AuthRequest) -> $crate::__sdk::AuthResult {
                $hostile()
            }
        }

        impl $crate::__sdk::Router for $name {
            fn on_send(
                &self,
                _sender: &$crate::__sdk::Principal,
                _msg: &$crate::__sdk::Message,
            ) -> $crate::__sdk::SendVerdict {
                $hostile()
            }
        }

        impl $crate::__sdk::Filter for $name {
            fn prepare_subscription(
                &self,
                _subscriber: &$crate::__sdk::Principal,
                _sub: &$crate::__sdk::Subscription,
            ) -> Result<Option<$crate::__sdk::FilterPlan>, String> {
                $hostile()
            }

            fn filter(
                &self,
                _token: &[u8],
                _msg: &$crate::__sdk::Message,
            ) -> $crate::__sdk::FilterVerdict {
                $hostile()
            }
        }

        impl $crate::__sdk::Redeliverer for $name {
            fn on_redeliver(
                &self,
                _event: &$crate::__sdk::RedeliverEvent,
            ) -> $crate::__sdk::RedeliverVerdict {
                $hostile()
            }
        }

        $crate::__sdk::export_full_with_redeliver!($name);
    };
}
