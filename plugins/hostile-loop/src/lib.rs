//! `hostile-loop` (tests only): spins forever in every hook (the deadline must stop it).

wit_bindgen::generate!({ world: "full", path: "../../wit" });

use exports::plugboard::plugin::authenticate::{AuthRequest, AuthResult, Guest as Authenticate};
use exports::plugboard::plugin::deliver::{
    FilterPlan, FilterVerdict, Guest as Deliver, Subscription,
};
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use exports::plugboard::plugin::send::{Guest as Send, SendVerdict};
use plugboard::plugin::types::{HeaderNeed, Manifest, Message, Needs, Principal};

/// Never returns.
fn hostile<T>() -> T {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_config: String) -> Result<Manifest, String> {
        let needs = Needs {
            headers: HeaderNeed::All,
            body: false,
        };
        Ok(Manifest {
            send: needs.clone(),
            deliver: needs,
        })
    }
}

impl Authenticate for Plugin {
    fn authenticate(_request: AuthRequest) -> AuthResult {
        hostile()
    }
}

impl Send for Plugin {
    fn on_send(_sender: Principal, _msg: Message) -> SendVerdict {
        hostile()
    }
}

impl Deliver for Plugin {
    fn prepare_subscription(
        _subscriber: Principal,
        _sub: Subscription,
    ) -> Result<Option<FilterPlan>, String> {
        hostile()
    }

    fn filter(_token: Vec<u8>, _msg: Message) -> FilterVerdict {
        hostile()
    }
}

export!(Plugin);
