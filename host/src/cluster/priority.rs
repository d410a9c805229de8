//! Consumer priority on a cluster queue (`activemq.priority`, `x-priority`): JetStream's
//! `prioritized` priority-group policy (nats-server 2.12+) gives a queue's messages to the
//! waiting pull with the lowest priority number, so subscriptions of a higher consumer priority,
//! on any edge, get the messages while they have room in their window (and so a waiting pull),
//! and the others get what they leave, as on one node.
//!
//! Every queue consumer is made with the policy and one group, [`GROUP`]; a pull names the
//! group and its subscription's level ([`level`]). A queue consumer made before (or by a
//! server without the policy) is left as it was and pulled without a priority: consumer
//! priority is then per edge only. async-nats' batch builder has no priority, so the pull
//! request is sent by [`super::pull_request`].

use async_nats::jetstream::{self, consumer::pull};

/// The consumers' one priority group.
pub const GROUP: &str = "stomp";
/// JetStream's priority levels: 0 (served first) to this.
pub const LOWEST: usize = 9;
/// The level of consumer priority 0 (the default): five levels above it, four below.
const DEFAULT_LEVEL: i64 = 5;

/// The JetStream level of STOMP consumer priority `priority` (higher is served first): 5 for
/// 0, 4 for 1 ... 0 for 5 and above, 6 for -1 ... 9 for -4 and below.
pub fn level(priority: i32) -> usize {
    (DEFAULT_LEVEL - i64::from(priority)).clamp(0, LOWEST as i64) as usize
}

/// `config` with the prioritized policy and [`GROUP`].
pub fn prioritized(mut config: pull::Config) -> pull::Config {
    config.priority_policy = jetstream::consumer::PriorityPolicy::Prioritized;
    config.priority_groups = vec![GROUP.to_string()];
    config
}

/// Whether `consumer` was made with the prioritized policy.
pub fn is_prioritized(consumer: &jetstream::consumer::Consumer<pull::Config>) -> bool {
    consumer.cached_info().config.priority_policy
        == jetstream::consumer::PriorityPolicy::Prioritized
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn higher_consumer_priorities_get_lower_levels() {
        assert_eq!(level(0), 5);
        assert_eq!(level(1), 4);
        assert_eq!(level(5), 0);
        assert_eq!(level(127), 0);
        assert_eq!(level(i32::MAX), 0);
        assert_eq!(level(-1), 6);
        assert_eq!(level(-4), 9);
        assert_eq!(level(i32::MIN), 9);
    }
}
