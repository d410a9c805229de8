//! The hook calls and their chains: authenticate (one authenticator), the send chain (config
//! order, fan-out flows through later plugins), and per-subscription filter chains prepared at
//! SUBSCRIBE.
//!
//! There is one chain for SEND ([`PluginHost::on_send_batch`]) and one for MESSAGE
//! ([`SubscriptionFilter::filter_batch`]); a single message is a batch of one. Per plugin, a
//! chain hands the messages it applies to to [`SendCalls::run`] /
//! [`SubscriptionFilter::filter_calls`], which split them
//! into runs ([`next_run_with`]: at most [`MAX_BATCH`] messages within the plugin's input cap) and
//! make one call per run through what the plugin exports: the batch exports (`send-batch`,
//! `deliver-batch` in the WIT) for runs, `send-packed` for a single SEND, and the plain
//! `send.on-send` / `deliver.filter` (one call per message) for a plugin that exports neither.
//! Every call goes through [`call!`]: check out an instance, arm the deadline, call, convert and
//! validate the answer, hand the instance back; a failure applies the plugin's policy to every
//! message of the call. A call the plugin's decision trace samples ([`super::trace`]) is made
//! for one message alone and recorded (see `traces.rs`).

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::bindings::deliver::{FilterVerdict, Subscription};
use super::bindings::types::{Needs, Principal as WitPrincipal};
use super::convert::{self, Destinations, Edit, Verdict, MAX_FANOUT};
use super::pool::{Failure, FailureKind};
use super::summary;
use super::trace::{Decision, Sample, TracedCall};
use super::{
    AuthOutcome, AuthRequest, CallContext, FailurePolicy, FilterOutcome, Hook, MessageRef, Plugin,
    PluginHost, PluginMessage, Principal, RejectCause, Rejection, RoutedBatch, SendOutcome,
    SubscriptionInfo,
};

/// Largest filter token a plugin may hand back from `prepare-subscription`.
const MAX_TOKEN: usize = 64 * 1024;
/// Most deliveries passed to one `filter-batch` call, and messages to one `on-send-batch` call.
const MAX_BATCH: usize = 64;
/// Bytes counted per message of a batch on top of its projection (lengths and flags).
const PACK_OVERHEAD: usize = 64;

mod traces;

pub use redeliver::{
    RedeliverCause, RedeliverEvent, RedeliverVerdict, MAX_NACK_HEADERS, MAX_REDELIVER_DELAY,
};

/// One call as the `context` import sees it: the virtual host, and the notes and start time
/// while it is traced.
struct Scope<'a> {
    vhost: &'a Arc<str>,
    traced: Option<TracedCall>,
}

impl<'a> Scope<'a> {
    /// A call for `context`, traced when `traced` (only then is the clock read).
    fn new(context: &'a CallContext, traced: bool) -> Scope<'a> {
        Scope {
            vhost: &context.vhost,
            traced: traced.then(TracedCall::start),
        }
    }
}

/// Calls one export of `plugin` under its limits, for `$scope` (a [`Scope`]). `$call` uses `$g`
/// (the typed exports of the interface) and `$s` (the store); `$convert` turns the guest's
/// answer into the host's or into an error string, which counts as invalid output.
macro_rules! call {
    ($plugin:expr, $hook:expr, $scope:expr, $export:ident, |$g:ident, $s:ident| $call:expr, |$ok:ident| $convert:expr) => {{
        let plugin: &Plugin = $plugin;
        let scope: &mut Scope<'_> = $scope;
        match plugin.pool.checkout($hook).await {
            Err(failure) => Err(failure),
            Ok(mut lease) => {
                // The call gets its whole budget: waiting for a busy pool and instantiating a
                // replacement instance during checkout (bounded by their own limits) are not
                // charged to it; for a Python guest instantiating alone takes more than a 5 ms
                // filter deadline.
                let warm = lease.warm();
                warm.arm(plugin.deadline($hook));
                warm.enter(scope.vhost, scope.traced.is_some());
                let $g = warm
                    .guest
                    .$export
                    .as_ref()
                    .expect("exports are checked at load");
                let $s = &mut warm.store;
                let result = match $call.await {
                    Ok($ok) => $convert.map_err(|e: String| Failure::new(FailureKind::Invalid, e)),
                    Err(e) => Err(plugin.pool.classify(warm, &e)),
                };
                if let Some(traced) = &mut scope.traced {
                    traced.notes = warm.take_notes();
                }
                plugin.pool.finish($hook, lease, result)
            }
        }
    }};
}

// After `call!`, which it uses.
mod redeliver;

/// Refuses an input larger than the plugin's cap before anything is copied into it.
fn check_size(plugin: &Plugin, hook: Hook, size: usize) -> Result<(), Failure> {
    if size > plugin.max_input {
        let detail = format!(
            "input of {size} bytes exceeds the cap of {} bytes",
            plugin.max_input
        );
        return Err(plugin
            .pool
            .fail(hook, Failure::new(FailureKind::Oversize, detail)));
    }
    Ok(())
}

fn failed(plugin: &Plugin) -> Rejection {
    Rejection::new(
        &plugin.name,
        RejectCause::Failed,
        format!("plugin `{}` failed", plugin.name),
    )
}

/// `plugin`'s own refusal, with its reason cleaned and cut.
fn refused(plugin: &Plugin, reason: String) -> Rejection {
    Rejection::new(&plugin.name, RejectCause::Verdict, convert::reason(reason))
}

/// Applies a checked send verdict (see [`check_verdict`]) of `plugin` to the message it was
/// given for, which the caller owns: the messages it becomes go to `push` (a single rewrite
/// edits the message in place; a fan-out copies it per edit). `Some(reason)` when it was
/// rejected: by the plugin, or because it routed the message to a destination the sender may
/// not send to (see [`check_route`]; then nothing of it goes to `push`).
fn apply_verdict(
    plugin: &Plugin,
    sender: &Principal,
    mut msg: PluginMessage,
    verdict: Verdict,
    mut push: impl FnMut(PluginMessage),
) -> Option<Rejection> {
    match verdict {
        Verdict::Keep => push(msg),
        Verdict::Rewrite(edit) => {
            if let Err(reason) = check_route(plugin, sender, &msg, &edit) {
                return Some(reason);
            }
            convert::apply_checked(&mut msg, edit, true);
            push(msg)
        }
        Verdict::FanOut(mut edits) => {
            if let Some(reason) = edits
                .iter()
                .find_map(|edit| check_route(plugin, sender, &msg, edit).err())
            {
                return Some(reason);
            }
            let last = edits.pop();
            for edit in edits {
                let mut copy = msg.clone();
                convert::apply_checked(&mut copy, edit, true);
                push(copy);
            }
            if let Some(edit) = last {
                convert::apply_checked(&mut msg, edit, true);
                push(msg);
            }
        }
        Verdict::Reject(reason) => return Some(refused(plugin, reason)),
    }
    None
}

/// Refuses an edit of send plugin `plugin` that routes `msg` to a destination its sender may not
/// send to, unless the plugin is configured with `routes_bypass_sender_rights` (a templated route
/// lets the client choose the destination; the SEND's own was checked before the plugins ran).
fn check_route(
    plugin: &Plugin,
    sender: &Principal,
    msg: &PluginMessage,
    edit: &Edit,
) -> Result<(), Rejection> {
    let Some(to) = edit.destination.as_deref() else {
        return Ok(());
    };
    if plugin.routes_bypass_sender_rights || *to == msg.destination[..] || may_send_all(sender, to)
    {
        return Ok(());
    }
    plugin.pool.counters.routes_refused.fetch_add(1, Relaxed);
    let reason = format!(
        "plugin `{}` routed the message to '{}', where '{}' may not send",
        plugin.name,
        crate::text::shown(to),
        sender.name
    );
    Err(Rejection::new(&plugin.name, RejectCause::Route, reason))
}

/// Whether `sender` may send to `to`, to each part when it is a composite destination.
fn may_send_all(sender: &Principal, to: &[u8]) -> bool {
    if !crate::router::is_composite(to) {
        return sender.may_send(to);
    }
    crate::router::composite_parts(&bytes::Bytes::copy_from_slice(to), usize::MAX)
        .is_ok_and(|parts| parts.iter().all(|part| sender.may_send(part)))
}

impl PluginHost {
    /// Whether a plugin serves the authenticate hook (else every client is anonymous).
    pub fn has_authenticator(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| p.hooks.contains(&Hook::Authenticate))
    }

    /// Runs the authenticator (fails closed unless configured open), outside any session:
    /// [`authenticate_in`](Self::authenticate_in) with [`CallContext::detached`].
    pub async fn authenticate(&self, req: AuthRequest) -> AuthOutcome {
        self.authenticate_in(&CallContext::detached(), req).await
    }

    /// Runs the authenticator for a connection (fails closed unless configured open).
    pub async fn authenticate_in(&self, context: &CallContext, req: AuthRequest) -> AuthOutcome {
        let Some(plugin) = self
            .plugins
            .iter()
            .find(|p| p.hooks.contains(&Hook::Authenticate))
        else {
            return AuthOutcome::Allow(Principal::anonymous(), None);
        };
        let hook = Hook::Authenticate;
        let mut scope = Scope::new(context, plugin.trace.sample(1).is(0));
        let result = match check_size(plugin, hook, req.size()) {
            Err(f) => Err(f),
            Ok(()) => {
                call!(
                    plugin,
                    hook,
                    &mut scope,
                    auth,
                    |g, s| g.call(s, &req),
                    |answer| match answer {
                        Ok((p, expiry)) => {
                            convert::principal(p).map(|p| AuthOutcome::Allow(p, expiry))
                        }
                        Err(reason) => Ok(AuthOutcome::Deny(convert::reason(reason))),
                    }
                )
            }
        };
        if let Some(call) = scope.traced {
            traces::authentication(plugin, context, &req, &result, call);
        }
        // Failing open never admits the login the client claimed: a client can make the call
        // fail (oversize headers, a busy pool), so it gets the configured fail-open principal.
        result.unwrap_or_else(|_| match plugin.failure {
            FailurePolicy::Closed => AuthOutcome::Deny("authentication is unavailable".into()),
            FailurePolicy::Open => AuthOutcome::Allow(plugin.fail_open.clone(), None),
        })
    }

    /// True when some plugin's send hook matches this destination (unmatched destinations pay nothing).
    pub fn intercepts_send(&self, destination: &[u8]) -> bool {
        self.plugins
            .iter()
            .any(|p| p.applies_to(Hook::Send, destination))
    }

    /// Runs the send chain for one message: [`route_batch`](Self::route_batch) with a batch of
    /// one.
    pub async fn on_send(&self, principal: &Principal, msg: PluginMessage) -> SendOutcome {
        self.on_send_in(&CallContext::detached(), 0, principal, msg)
            .await
    }

    /// [`on_send`](Self::on_send) for a session (`context`) whose next published message gets
    /// sequence number `next_message` (for decision traces).
    pub async fn on_send_in(
        &self,
        context: &CallContext,
        next_message: u64,
        principal: &Principal,
        msg: PluginMessage,
    ) -> SendOutcome {
        let chain = self
            .run_chain(context, next_message, principal, vec![msg])
            .await;
        match chain.rejected {
            Some(reason) => SendOutcome::Reject(reason),
            // Every message left came from the one input message.
            None => SendOutcome::Deliver(chain.current),
        }
    }

    /// [`route_batch`](Self::route_batch), with one outcome per message: those of a prefix of
    /// `msgs`, the last one a `Reject` when a message was rejected (see `route_batch`).
    pub async fn on_send_batch(
        &self,
        principal: &Principal,
        msgs: Vec<PluginMessage>,
    ) -> Vec<SendOutcome> {
        let RoutedBatch {
            messages,
            counts,
            rejected,
        } = self.route_batch(principal, msgs).await;
        let mut messages = messages.into_iter();
        let mut outcomes: Vec<SendOutcome> = counts
            .iter()
            .map(|&n| SendOutcome::Deliver(messages.by_ref().take(n).collect()))
            .collect();
        outcomes.extend(rejected.map(SendOutcome::Reject));
        outcomes
    }

    /// Whether some send plugin takes several messages per call (`send-batch` or
    /// `send-batch-packed`): then a
    /// session hands pipelined SENDs to [`on_send_batch`](Self::on_send_batch).
    pub fn batches_send(&self) -> bool {
        self.plugins.iter().any(|p| {
            p.hooks.contains(&Hook::Send) && (p.pool.batches_send() || p.pool.batches_send_packed())
        })
    }

    /// Runs the send chain in config order over several messages of one sender: each plugin
    /// sees, in order, the messages the previous one produced (a fan-out's copies included) whose
    /// destinations it matches, in as few calls as its exports allow (batched when it exports a batch entry point; a failed
    /// call applies its failure policy to every message of it).
    ///
    /// The outcome is that of a prefix of `msgs`: processing stops at the first message that is
    /// rejected, which is then [`RoutedBatch::rejected`] (later plugins no longer see it or the
    /// messages after it; plugins before the rejecting one already have).
    pub async fn route_batch(
        &self,
        principal: &Principal,
        msgs: Vec<PluginMessage>,
    ) -> RoutedBatch {
        self.route_batch_in(&CallContext::detached(), 0, principal, msgs)
            .await
    }

    /// [`route_batch`](Self::route_batch) for a session (`context`) whose next published
    /// message gets sequence number `next_message` (for decision traces).
    pub async fn route_batch_in(
        &self,
        context: &CallContext,
        next_message: u64,
        principal: &Principal,
        msgs: Vec<PluginMessage>,
    ) -> RoutedBatch {
        self.run_chain(context, next_message, principal, msgs)
            .await
            .routed()
    }

    async fn run_chain(
        &self,
        context: &CallContext,
        next_message: u64,
        principal: &Principal,
        msgs: Vec<PluginMessage>,
    ) -> Chain {
        let mut chain = Chain {
            alive: msgs.len(),
            current: msgs,
            origin: None,
            rejected: None,
        };
        let mut sender: Option<WitPrincipal> = None;
        let mut results = Vec::new();
        // Traced decisions (only while some plugin traces): the input message each is about.
        let mut traced: Vec<(usize, &Plugin, Decision)> = Vec::new();
        let mut decisions: Vec<(usize, Decision)> = Vec::new();
        for plugin in self
            .plugins
            .iter()
            .filter(|p| p.hooks.contains(&Hook::Send))
        {
            // Which messages the plugin applies to: usually all (no list made then).
            let applies = |m: &PluginMessage| plugin.applies_to(Hook::Send, &m.destination);
            let mask: Option<Vec<bool>> = match chain.current.iter().position(|m| !applies(m)) {
                None => None,
                Some(_) => Some(chain.current.iter().map(applies).collect()),
            };
            let one: [MessageRef<'_>; 1];
            let many: Vec<MessageRef<'_>>;
            let inputs: &[MessageRef<'_>] = match &mask {
                None if chain.current.len() == 1 => {
                    one = [chain.current[0].view()];
                    &one
                }
                None => {
                    many = chain.current.iter().map(PluginMessage::view).collect();
                    &many
                }
                Some(mask) => {
                    many = chain
                        .current
                        .iter()
                        .zip(mask)
                        .filter(|(_, &a)| a)
                        .map(|(m, _)| m.view())
                        .collect();
                    &many
                }
            };
            if inputs.is_empty() {
                continue;
            }
            results.clear();
            let sample = plugin.trace.sample(inputs.len());
            let calls = SendCalls {
                plugin,
                context,
                sample,
                principal,
            };
            calls
                .run(&mut sender, inputs, &mut results, &mut decisions)
                .await;
            // Input index `j` is `current[k]`, which came from input message `origin[k]`.
            for (j, decision) in decisions.drain(..) {
                let k = match &mask {
                    None => j,
                    Some(mask) => (0..mask.len())
                        .filter(|&k| mask[k])
                        .nth(j)
                        .expect("one input per applying message"),
                };
                let i = chain.origin.as_ref().map_or(k, |origin| origin[k]);
                traced.push((i, plugin, decision));
            }
            let applies = |k: usize| mask.as_ref().is_none_or(|mask| mask[k]);
            let open = plugin.failure == FailurePolicy::Open;
            let one_to_one = results.iter().all(|r| match r {
                Ok(Verdict::FanOut(_)) => false,
                Ok(_) => true,
                Err(()) => true,
            });
            let mut results = results.drain(..);
            if one_to_one {
                // Every message stays one message (kept, rewritten, or the chain stops at it):
                // edited in place.
                for k in 0..chain.current.len() {
                    if !applies(k) {
                        continue;
                    }
                    let reject = match results.next().expect("one result per message") {
                        Ok(Verdict::Keep) => None,
                        Ok(Verdict::Rewrite(edit)) => {
                            let msg = &mut chain.current[k];
                            match check_route(plugin, principal, msg, &edit) {
                                Ok(()) => {
                                    convert::apply_checked(msg, edit, true);
                                    None
                                }
                                Err(reason) => Some(reason),
                            }
                        }
                        Ok(Verdict::Reject(reason)) => Some(refused(plugin, reason)),
                        Ok(Verdict::FanOut(_)) => unreachable!("not one to one"),
                        Err(()) if open => None,
                        Err(()) => Some(failed(plugin)),
                    };
                    if let Some(reason) = reject {
                        chain.reject_at(k, reason);
                        break;
                    }
                }
                continue;
            }
            // Some messages become several (or none): the list is rebuilt.
            let origin = chain.origins();
            let mut next = Vec::with_capacity(chain.current.len());
            let mut next_origin = Vec::with_capacity(chain.current.len());
            // Where the copies of input message `at` start in `next`.
            let (mut at, mut start) = (usize::MAX, 0);
            let current = std::mem::take(&mut chain.current);
            for (k, (msg, i)) in current.into_iter().zip(origin.iter().copied()).enumerate() {
                if i != at {
                    (at, start) = (i, next.len());
                }
                if !applies(k) {
                    next.push(msg);
                    next_origin.push(i);
                    continue;
                }
                let mut push = |m| {
                    next.push(m);
                    next_origin.push(i);
                };
                let mut reject = match results.next().expect("one result per message") {
                    Ok(verdict) => apply_verdict(plugin, principal, msg, verdict, &mut push),
                    Err(()) if open => {
                        push(msg);
                        None
                    }
                    Err(()) => Some(failed(plugin)),
                };
                if reject.is_none() && next.len() - start > MAX_FANOUT {
                    let reason = format!(
                        "plugin `{}` fanned out to more than {MAX_FANOUT} messages",
                        plugin.name
                    );
                    reject = Some(Rejection::new(&plugin.name, RejectCause::FanOut, reason));
                }
                if let Some(reason) = reject {
                    // Nothing from this input message on goes further (see `reject_at`).
                    next.truncate(start);
                    next_origin.truncate(start);
                    (chain.rejected, chain.alive) = (Some(reason), i);
                    break;
                }
            }
            chain.current = next;
            chain.origin = Some(next_origin);
        }
        if !traced.is_empty() {
            chain.record(traced, context, next_message);
        }
        chain
    }

    /// Called at SUBSCRIBE outside any session: [`prepare_subscription_in`] with
    /// [`CallContext::detached`].
    ///
    /// [`prepare_subscription_in`]: Self::prepare_subscription_in
    pub async fn prepare_subscription(
        &self,
        principal: &Principal,
        sub: SubscriptionInfo,
    ) -> Result<Option<Arc<SubscriptionFilter>>, Rejection> {
        self.prepare_subscription_in(&CallContext::detached(), principal, sub)
            .await
    }

    /// Called at SUBSCRIBE of session `context`. Err(reason) = the SUBSCRIBE is refused (e.g.
    /// malformed selector, reason says where). Ok(None) = no filter applies: deliveries pay
    /// nothing. The filter calls for its deliveries are made for `context` too.
    pub async fn prepare_subscription_in(
        &self,
        context: &CallContext,
        principal: &Principal,
        sub: SubscriptionInfo,
    ) -> Result<Option<Arc<SubscriptionFilter>>, Rejection> {
        let applicable: Vec<&Arc<Plugin>> = self
            .plugins
            .iter()
            .filter(|p| p.applies_to(Hook::Message, &sub.destination))
            .collect();
        if applicable.is_empty() {
            return Ok(None);
        }
        let subscriber = convert::wit_principal(principal);
        let info = Subscription {
            id: convert::text(&sub.id),
            destination: convert::text(&sub.destination),
            headers: convert::wit_headers(&sub.headers),
        };
        let size: usize = sub
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 16)
            .sum();
        let mut stages = Vec::new();
        for plugin in applicable {
            let hook = Hook::Message;
            let mut scope = Scope::new(context, plugin.trace.sample(1).is(0));
            let result = match check_size(plugin, hook, size) {
                Err(f) => Err(f),
                Ok(()) => call!(
                    plugin,
                    hook,
                    &mut scope,
                    deliver,
                    |g, s| g.call_prepare_subscription(s, &subscriber, &info),
                    |answer| match answer {
                        Ok(Some(plan)) if plan.token.len() > MAX_TOKEN =>
                            Err(format!("filter token of {} bytes", plan.token.len())),
                        other => Ok(other),
                    }
                ),
            };
            if let Some(call) = scope.traced {
                traces::subscription(plugin, context, principal, &sub, &result, call);
            }
            match result {
                Ok(Ok(Some(plan))) => stages.push(Stage {
                    plugin: plugin.clone(),
                    token: plan.token,
                    needs: plan.needs,
                }),
                Ok(Ok(None)) => {}
                Ok(Err(reason)) => return Err(refused(plugin, reason)),
                Err(_) if plugin.failure == FailurePolicy::Open => {}
                Err(_) => return Err(failed(plugin)),
            }
        }
        Ok((!stages.is_empty()).then(|| {
            Arc::new(SubscriptionFilter {
                stages,
                context: context.clone(),
                subscription: crate::text::shown(&sub.id),
                subscriber: principal.name.clone(),
            })
        }))
    }
}

/// The next run of `msgs` from `start` that one call takes, for an input cap of `cap` bytes: at
/// most `max` messages whose projections by `needs` fit in the cap together, and their size as
/// counted for the cap. The first message always joins, so a message that alone exceeds the
/// cap is a run of its own, which its call refuses before copying anything (`check_size`).
fn next_run_with(
    cap: usize,
    msgs: &[MessageRef<'_>],
    start: usize,
    needs: &Needs,
    max: usize,
) -> (Range<usize>, usize) {
    let (mut end, mut size) = (start, 0usize);
    while end < msgs.len() && end - start < max {
        let s = convert::input_size(msgs[end], needs) + PACK_OVERHEAD;
        if end > start && size + s > cap {
            break;
        }
        size += s;
        end += 1;
    }
    (start..end, size)
}

/// One send plugin's part of a chain run: the plugin, who the calls are for, and which of the
/// messages are traced.
struct SendCalls<'a> {
    plugin: &'a Plugin,
    context: &'a CallContext,
    sample: Sample,
    principal: &'a Principal,
}

impl SendCalls<'_> {
    /// Runs the plugin over `msgs`, pushing one result per message onto `out`, in order, `Err`
    /// where its call failed, and a decision per traced message onto `decisions` (with its
    /// index in `msgs`). The calls follow what the plugin exports: every run of up to
    /// [`MAX_BATCH`] messages goes through `send-batch-packed` when it is exported; otherwise
    /// runs go through `send-batch`, and a run of one through `send-packed`, else
    /// `send-batch`, else `send.on-send`. A plugin that exports no fast path gets exactly one
    /// call per message. A traced message is called alone, so that its notes are its own.
    async fn run(
        &self,
        sender: &mut Option<WitPrincipal>,
        msgs: &[MessageRef<'_>],
        out: &mut Vec<Result<Verdict, ()>>,
        decisions: &mut Vec<(usize, Decision)>,
    ) {
        let plugin = self.plugin;
        let principal = self.principal;
        let needs = &plugin.manifest.send;
        let pool = &plugin.pool;
        let (packs, batches, packed) = (
            pool.packs_send(),
            pool.batches_send(),
            pool.batches_send_packed(),
        );
        let max = if batches || packed { MAX_BATCH } else { 1 };
        let mut start = 0;
        while start < msgs.len() {
            let traced = self.sample.is(start);
            let (run, size) = traced_run(plugin, msgs, start, needs, max, self.sample);
            start = run.end;
            let mut scope = Scope::new(self.context, traced);
            let result = if packed {
                call_send_batch_packed(plugin, &mut scope, principal, &msgs[run.clone()], size)
                    .await
            } else if run.len() == 1 && (packs || !batches) {
                let msg = msgs[run.start];
                let result = if packs {
                    call_send_packed(plugin, &mut scope, principal, msg).await
                } else {
                    let sender = sender.get_or_insert_with(|| convert::wit_principal(principal));
                    call_send(plugin, &mut scope, sender, msg).await
                };
                if let Some(call) = scope.traced {
                    let verdict = result.as_ref().map(summary::send);
                    decisions.push((
                        run.start,
                        traces::send(self.plugin, self.context, msg, verdict, call),
                    ));
                }
                out.push(result.map_err(drop));
                continue;
            } else {
                call_send_batch(plugin, &mut scope, principal, &msgs[run.clone()], size).await
            };
            if let Some(call) = scope.traced {
                // A traced run is one message.
                let verdict = result.as_ref().map(|verdicts| summary::send(&verdicts[0]));
                decisions.push((
                    run.start,
                    traces::send(self.plugin, self.context, msgs[run.start], verdict, call),
                ));
            }
            match result {
                Ok(verdicts) => out.extend(verdicts.into_iter().map(Ok)),
                Err(_) => out.extend(run.map(|_| Err(()))),
            }
        }
    }
}

/// The next run of `msgs` from `start` ([`next_run_with`]), cut so that a sampled message is a run
/// of its own: a traced call's notes are then about exactly one message.
fn traced_run(
    plugin: &Plugin,
    msgs: &[MessageRef<'_>],
    start: usize,
    needs: &Needs,
    max: usize,
    sample: Sample,
) -> (Range<usize>, usize) {
    traced_run_with(plugin.max_input, msgs, start, needs, max, sample)
}

/// [`traced_run`] for an input cap of `cap` bytes.
fn traced_run_with(
    cap: usize,
    msgs: &[MessageRef<'_>],
    start: usize,
    needs: &Needs,
    max: usize,
    sample: Sample,
) -> (Range<usize>, usize) {
    if !sample.on() {
        return next_run_with(cap, msgs, start, needs, max);
    }
    if sample.is(start) {
        return next_run_with(cap, msgs, start, needs, 1);
    }
    let end = (start + max).min(msgs.len());
    let max = sample
        .next_in(start + 1, end)
        .map_or(max, |next| next - start);
    next_run_with(cap, msgs, start, needs, max)
}

/// The state of a send chain run (see [`PluginHost::on_send_batch`]).
struct Chain {
    /// Every message as the chain so far made it, in order.
    current: Vec<PluginMessage>,
    /// The index of the input message each of `current` came from; `None` while that is its
    /// own index (no message became several or none yet).
    origin: Option<Vec<usize>>,
    /// The input messages still in play are those before this one.
    alive: usize,
    /// Why input message `alive` was rejected.
    rejected: Option<Rejection>,
}

impl Chain {
    fn origins(&mut self) -> Vec<usize> {
        self.origin
            .take()
            .unwrap_or_else(|| (0..self.current.len()).collect())
    }

    /// Rejects the input message `current[k]` came from: nothing from it on goes further. A
    /// reject by an earlier plugin was for a later message, so this one replaces it; later
    /// plugins still see the messages before it (and may reject one of those).
    fn reject_at(&mut self, k: usize, reason: Rejection) {
        let (input, start) = match &self.origin {
            None => (k, k),
            Some(origin) => {
                let input = origin[k];
                (input, origin.partition_point(|&o| o < input))
            }
        };
        self.current.truncate(start);
        if let Some(origin) = &mut self.origin {
            origin.truncate(start);
        }
        (self.rejected, self.alive) = (Some(reason), input);
    }

    /// Per input message still in play: how many messages it became.
    fn counts(&self) -> Vec<usize> {
        match &self.origin {
            None => vec![1; self.alive],
            Some(origin) => {
                let mut counts = vec![0; self.alive];
                for &i in origin {
                    counts[i] += 1;
                }
                counts
            }
        }
    }

    /// What the chain made of the batch.
    fn routed(self) -> RoutedBatch {
        let counts = self.counts();
        RoutedBatch {
            messages: self.current,
            counts,
            rejected: self.rejected,
        }
    }
}

/// One `send.on-send` call.
async fn call_send(
    plugin: &Plugin,
    scope: &mut Scope<'_>,
    sender: &WitPrincipal,
    msg: MessageRef<'_>,
) -> Result<Verdict, Failure> {
    let needs = &plugin.manifest.send;
    check_size(plugin, Hook::Send, convert::input_size(msg, needs))?;
    let projected = convert::project(msg, needs);
    call!(
        plugin,
        Hook::Send,
        scope,
        send,
        |g, s| g.call_on_send(s, sender, &projected),
        |verdict| convert::verdict(verdict, &mut Destinations::new(false))
            .and_then(|verdict| check_verdict(plugin, verdict))
    )
}

/// One `send-packed.on-send-packed` call: one byte list instead of a string per field, and no
/// conversion of the principal.
async fn call_send_packed(
    plugin: &Plugin,
    scope: &mut Scope<'_>,
    sender: &Principal,
    msg: MessageRef<'_>,
) -> Result<Verdict, Failure> {
    let needs = &plugin.manifest.send;
    let size = convert::input_size(msg, needs);
    check_size(plugin, Hook::Send, size)?;
    let mut input = Vec::with_capacity(size + 128);
    convert::pack_principal(sender, &mut input);
    convert::pack_message(msg, needs, &mut input);
    call!(
        plugin,
        Hook::Send,
        scope,
        send_packed,
        |g, s| g.call(s, &input),
        |verdict| convert::verdict(verdict, &mut Destinations::new(false))
            .and_then(|verdict| check_verdict(plugin, verdict))
    )
}

/// Packs the input of `send-batch.on-send-batch`: the principal, a count, the messages.
fn pack_send_batch(
    principal: &Principal,
    msgs: &[MessageRef<'_>],
    needs: &Needs,
    size: usize,
) -> Vec<u8> {
    let mut input = Vec::with_capacity(size + 132);
    convert::pack_principal(principal, &mut input);
    pack_messages(msgs, needs, &mut input);
    input
}

/// Appends a `u32` count and that many packed messages: the batch framing of `on-send-batch`
/// (after the principal) and of `filter-batch`'s `msgs`.
fn pack_messages(msgs: &[MessageRef<'_>], needs: &Needs, out: &mut Vec<u8>) {
    out.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
    for &msg in msgs {
        convert::pack_message(msg, needs, out);
    }
}

/// One `send-batch.on-send-batch` call for `msgs` (non-empty, `size` bytes as [`next_run_with`]
/// counts them).
async fn call_send_batch(
    plugin: &Plugin,
    scope: &mut Scope<'_>,
    principal: &Principal,
    msgs: &[MessageRef<'_>],
    size: usize,
) -> Result<Vec<Verdict>, Failure> {
    check_size(plugin, Hook::Send, size)?;
    let input = pack_send_batch(principal, msgs, &plugin.manifest.send, size);
    call!(
        plugin,
        Hook::Send,
        scope,
        send_batch,
        |g, s| g.call(s, &input),
        |verdicts| if verdicts.len() != msgs.len() {
            Err(format!(
                "on-send-batch returned {} verdicts for {} messages",
                verdicts.len(),
                msgs.len()
            ))
        } else {
            let mut destinations = Destinations::new(msgs.len() > 1);
            verdicts
                .into_iter()
                .map(|v| {
                    convert::verdict(v, &mut destinations).and_then(|v| check_verdict(plugin, v))
                })
                .collect()
        }
    )
}

/// One `send-batch-packed.on-send-batch-packed` call for `msgs` (non-empty, `size` bytes as
/// [`next_run_with`] counts them): the input of `on-send-batch`, the verdicts packed.
async fn call_send_batch_packed(
    plugin: &Plugin,
    scope: &mut Scope<'_>,
    principal: &Principal,
    msgs: &[MessageRef<'_>],
    size: usize,
) -> Result<Vec<Verdict>, Failure> {
    check_size(plugin, Hook::Send, size)?;
    let input = pack_send_batch(principal, msgs, &plugin.manifest.send, size);
    call!(
        plugin,
        Hook::Send,
        scope,
        send_batch_packed,
        |g, s| g.call(s, &input),
        |output| {
            let mut destinations = Destinations::new(msgs.len() > 1);
            convert::read_verdicts(&output, msgs.len(), &mut destinations).and_then(|verdicts| {
                verdicts
                    .into_iter()
                    .map(|v| check_verdict(plugin, v))
                    .collect()
            })
        }
    )
}

/// Checks a send verdict (its edits are applied by [`apply_verdict`]).
fn check_verdict(plugin: &Plugin, verdict: Verdict) -> Result<Verdict, String> {
    let max_body = plugin.max_input;
    match &verdict {
        Verdict::Keep | Verdict::Reject(_) => {}
        Verdict::Rewrite(edit) => convert::check_edit(edit, max_body)?,
        Verdict::FanOut(edits) if edits.len() > MAX_FANOUT => {
            return Err(format!("fan-out to {} messages", edits.len()))
        }
        Verdict::FanOut(edits) => {
            for edit in edits {
                convert::check_edit(edit, max_body)?;
            }
        }
    }
    Ok(verdict)
}

/// One plugin's part of a subscription's filter chain.
struct Stage {
    plugin: Arc<Plugin>,
    token: Vec<u8>,
    needs: Needs,
}

/// What one stage decided for one delivery.
#[derive(Debug)]
enum StageVerdict {
    /// Deliver it as it is so far.
    Deliver,
    /// Deliver this instead (the stage's edit applied).
    Rewrite(PluginMessage),
    /// Not for this subscriber.
    Skip,
}

impl StageVerdict {
    fn of(verdict: FilterVerdict, msg: MessageRef<'_>, max_body: usize) -> Result<Self, String> {
        Ok(match verdict {
            FilterVerdict::Deliver => StageVerdict::Deliver,
            FilterVerdict::Skip => StageVerdict::Skip,
            FilterVerdict::Rewrite(edit) => {
                let edit = convert::edit(edit, &mut Destinations::new(false))?;
                StageVerdict::Rewrite(convert::apply_edit(msg, edit, max_body)?)
            }
        })
    }
}

/// The filters prepared for one subscription, run in config order for each delivery.
pub struct SubscriptionFilter {
    stages: Vec<Stage>,
    /// The session that subscribed: the calls are made for it.
    context: CallContext,
    /// The subscription id and the subscriber, for traced decisions.
    subscription: String,
    subscriber: String,
}

impl SubscriptionFilter {
    /// Runs the chain for one delivery: [`filter_batch`](Self::filter_batch) with a batch of one.
    pub async fn filter(&self, msg: &PluginMessage) -> FilterOutcome {
        self.filter_batch(&[msg.view()])
            .await
            .pop()
            .expect("one outcome for one message")
    }

    /// Runs the chain for several deliveries of this subscription: one outcome per message, in
    /// order. Per message, the stages run in config order; skip wins and rewrites compose. Each
    /// stage is called for the messages still to be delivered, in as few calls as its exports
    /// allow (batched when it exports a batch entry point; a failed call applies its failure policy to every message of it).
    pub async fn filter_batch(&self, msgs: &[MessageRef<'_>]) -> Vec<FilterOutcome> {
        // The outcome so far of each message.
        let mut outcomes: Vec<FilterOutcome> = vec![FilterOutcome::Deliver; msgs.len()];
        // The messages not skipped yet; `None` while no stage changed anything (then they are
        // `msgs` themselves: no list made).
        let mut alive: Option<Vec<usize>> = None;
        let mut verdicts = Vec::new();
        for stage in &self.stages {
            verdicts.clear();
            match &mut alive {
                None => self.filter_calls(stage, msgs, &mut verdicts).await,
                Some(alive) => {
                    alive.retain(|&i| {
                        !matches!(outcomes[i], FilterOutcome::Skip | FilterOutcome::Failed)
                    });
                    if alive.is_empty() {
                        break;
                    }
                    let current: Vec<MessageRef<'_>> = alive
                        .iter()
                        .map(|&i| match &outcomes[i] {
                            FilterOutcome::Rewrite(m) => m.view(),
                            _ => msgs[i],
                        })
                        .collect();
                    self.filter_calls(stage, &current, &mut verdicts).await;
                }
            }
            let open = stage.plugin.failure == FailurePolicy::Open;
            let mut changed = false;
            for (k, verdict) in verdicts.drain(..).enumerate() {
                let i = alive.as_ref().map_or(k, |alive| alive[k]);
                let outcome = match verdict {
                    Ok(StageVerdict::Deliver) => continue,
                    Err(()) if open => continue,
                    Ok(StageVerdict::Rewrite(m)) => FilterOutcome::Rewrite(m),
                    Ok(StageVerdict::Skip) => FilterOutcome::Skip,
                    // Failing closed: not a decline (a queue tries the message again).
                    Err(()) => FilterOutcome::Failed,
                };
                outcomes[i] = outcome;
                changed = true;
            }
            if changed && alive.is_none() {
                alive = Some((0..msgs.len()).collect());
            }
        }
        outcomes
    }
}

impl SubscriptionFilter {
    /// Runs one stage over `msgs`: one verdict per message, in order, `Err` where its call
    /// failed. A plugin that exports `deliver-batch` gets runs of up to [`MAX_BATCH`] messages
    /// (a single delivery too) through `filter-batch`; others get one `deliver.filter` call per
    /// message. A traced message is called alone (its decision recorded here).
    async fn filter_calls(
        &self,
        stage: &Stage,
        msgs: &[MessageRef<'_>],
        out: &mut Vec<Result<StageVerdict, ()>>,
    ) {
        let plugin = &*stage.plugin;
        let batches = plugin.pool.batches();
        let max = if batches { MAX_BATCH } else { 1 };
        let sample = plugin.trace.sample(msgs.len());
        let mut start = 0;
        while start < msgs.len() {
            let traced = sample.is(start);
            let (run, size) = traced_run(plugin, msgs, start, &stage.needs, max, sample);
            start = run.end;
            let mut scope = Scope::new(&self.context, traced);
            if !batches {
                let result = call_filter(stage, &mut scope, msgs[run.start]).await;
                traces::filter(self, stage, msgs[run.start], &result, scope.traced);
                out.push(result.map_err(drop));
                continue;
            }
            let result = call_filter_batch(stage, &mut scope, &msgs[run.clone()], size).await;
            if scope.traced.is_some() {
                // A traced run is one message.
                let one = result.as_ref().map(|verdicts| &verdicts[0]);
                traces::filter(self, stage, msgs[run.start], &one, scope.traced);
            }
            match result {
                Ok(verdicts) => out.extend(verdicts.into_iter().map(Ok)),
                Err(_) => out.extend(run.map(|_| Err(()))),
            }
        }
    }
}

/// One `deliver-batch.filter-batch` call for `msgs` (non-empty, `size` bytes as [`next_run_with`]
/// counts them).
async fn call_filter_batch(
    stage: &Stage,
    scope: &mut Scope<'_>,
    msgs: &[MessageRef<'_>],
    size: usize,
) -> Result<Vec<StageVerdict>, Failure> {
    let plugin = &*stage.plugin;
    check_size(plugin, Hook::Message, size)?;
    let mut packed = Vec::with_capacity(size + 4);
    pack_messages(msgs, &stage.needs, &mut packed);
    let max_body = plugin.max_input;
    call!(
        plugin,
        Hook::Message,
        scope,
        deliver_batch,
        |g, s| g.call(s, &stage.token, &packed),
        |verdicts| if verdicts.len() != msgs.len() {
            Err(format!(
                "filter-batch returned {} verdicts for {} messages",
                verdicts.len(),
                msgs.len()
            ))
        } else {
            verdicts
                .into_iter()
                .zip(msgs)
                .map(|(verdict, &msg)| StageVerdict::of(verdict, msg, max_body))
                .collect()
        }
    )
}

/// One `deliver.filter` call.
async fn call_filter(
    stage: &Stage,
    scope: &mut Scope<'_>,
    msg: MessageRef<'_>,
) -> Result<StageVerdict, Failure> {
    let plugin = &*stage.plugin;
    check_size(
        plugin,
        Hook::Message,
        convert::input_size(msg, &stage.needs),
    )?;
    let projected = convert::project(msg, &stage.needs);
    let max_body = plugin.max_input;
    call!(
        plugin,
        Hook::Message,
        scope,
        deliver,
        |g, s| g.call_filter(s, &stage.token, &projected),
        |verdict| StageVerdict::of(verdict, msg, max_body)
    )
}

#[cfg(test)]
mod tests {
    //! The host's packed encoding (`convert::pack_principal`, `convert::pack_message` and the
    //! batch framing above) read back by the guest's reader (`plugboard-packed`): every message
    //! must read as exactly the projection the typed path (`convert::project`) passes.

    use bytes::Bytes;
    use plugboard_packed::{MessageView, PrincipalView, Reader};
    use proptest::prelude::*;

    use super::super::bindings::types::{HeaderNeed, Message, Needs};
    use super::*;

    /// A message, as comparable values: destination, headers, content type, body length, body.
    type Seen = (
        String,
        Vec<(String, String)>,
        Option<String>,
        u64,
        Option<Vec<u8>>,
    );

    fn typed(msg: &PluginMessage, needs: &Needs) -> Seen {
        let Message {
            destination,
            headers,
            content_type,
            body_len,
            body,
        } = convert::project(msg.view(), needs);
        let headers = headers.into_iter().map(|h| (h.name, h.value)).collect();
        (destination, headers, content_type, body_len, body)
    }

    fn read(view: &MessageView<'_>) -> Seen {
        (
            view.destination.to_string(),
            view.headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            view.content_type.map(str::to_string),
            view.body_len,
            view.body.map(<[u8]>::to_vec),
        )
    }

    fn principal_seen(p: &PrincipalView<'_>) -> (String, Vec<String>, Vec<String>, Vec<String>) {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        (
            p.name.to_string(),
            owned(&p.groups),
            owned(&p.may_send),
            owned(&p.may_subscribe),
        )
    }

    fn expected_principal(p: &Principal) -> (String, Vec<String>, Vec<String>, Vec<String>) {
        (
            p.name.clone(),
            p.groups.clone(),
            p.may_send.clone(),
            p.may_subscribe.clone(),
        )
    }

    fn message(destination: &[u8], headers: &[(&[u8], &[u8])], body: &[u8]) -> PluginMessage {
        PluginMessage {
            destination: Bytes::copy_from_slice(destination),
            headers: headers
                .iter()
                .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
                .collect(),
            body: Bytes::copy_from_slice(body),
        }
    }

    fn needs(headers: HeaderNeed, body: bool) -> Needs {
        Needs { headers, body }
    }

    /// Every projection the tests pack with.
    fn all_needs() -> Vec<Needs> {
        let named =
            |names: &[&str]| HeaderNeed::Named(names.iter().map(|n| n.to_string()).collect());
        vec![
            needs(HeaderNeed::None, false),
            needs(HeaderNeed::None, true),
            needs(HeaderNeed::All, false),
            needs(HeaderNeed::All, true),
            needs(named(&["x"]), false),
            needs(named(&["x", "x", "content-type", "absent"]), true),
            needs(named(&[]), true),
        ]
    }

    /// The edge cases: empty, large, repeated headers, bytes that are not UTF-8.
    fn edge_messages() -> Vec<PluginMessage> {
        let big_value = vec![b'v'; 64 * 1024];
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
            .map(|i| {
                (
                    format!("h{}", i % 7).into_bytes(),
                    format!("{i}").into_bytes(),
                )
            })
            .collect();
        let many: Vec<(&[u8], &[u8])> = many.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let mut big = message(b"/queue/big", &many, &vec![0xAB; 1 << 20]);
        big.headers
            .push((Bytes::from_static(b"x"), Bytes::from(big_value)));
        vec![
            message(b"", &[], b""),
            message(b"/queue/a", &[(b"", b"")], b""),
            message(
                b"/queue/a",
                &[
                    (b"x", b"1"),
                    (b"content-type", b"text/plain"),
                    (b"x", b"2"),
                    (b"content-type", b"application/json"),
                    (b"y", b""),
                    (b"x", b"3"),
                ],
                b"hello",
            ),
            message(
                b"/queue/\xff\xfe",
                &[
                    (b"\xc3(", b"a\x80b"),
                    (b"x", b"\xf0\x9f\x92"),
                    (b"content-type", b"text/\xff"),
                    (b"x", "caf\u{e9} \u{1f600}".as_bytes()),
                ],
                b"\x00\xff\xfe\x80 not utf-8",
            ),
            big,
        ]
    }

    fn principals() -> Vec<Principal> {
        vec![
            Principal {
                name: String::new(),
                groups: vec![],
                may_send: vec![],
                may_subscribe: vec![],
            },
            Principal::named("alice"),
            Principal {
                name: "b\u{f6}b".into(),
                groups: vec!["ops".into(), "".into(), "ops".into()],
                may_send: (0..200).map(|i| format!("/queue/{i}.*")).collect(),
                may_subscribe: vec!["*".into()],
            },
        ]
    }

    #[test]
    fn a_packed_message_reads_as_its_projection() {
        for needs in all_needs() {
            for msg in edge_messages() {
                let mut out = Vec::new();
                convert::pack_message(msg.view(), &needs, &mut out);
                let mut reader = Reader::new(&out);
                let view = reader
                    .message()
                    .expect("the reader takes what the host packs");
                assert_eq!(read(&view), typed(&msg, &needs), "needs {needs:?}");
                assert!(reader.rest().is_empty(), "nothing left over");
            }
        }
    }

    #[test]
    fn a_packed_principal_reads_back() {
        for p in principals() {
            let mut out = Vec::new();
            convert::pack_principal(&p, &mut out);
            let mut reader = Reader::new(&out);
            let bytes = reader.skip_principal().expect("skips");
            assert!(reader.rest().is_empty());
            let view = Reader::new(bytes).principal().expect("reads");
            assert_eq!(principal_seen(&view), expected_principal(&p));
        }
    }

    #[test]
    fn batches_read_as_their_messages_in_order() {
        let msgs = edge_messages();
        let views: Vec<MessageRef<'_>> = msgs.iter().map(PluginMessage::view).collect();
        for needs in all_needs() {
            let expected: Vec<Seen> = msgs.iter().map(|m| typed(m, &needs)).collect();
            for p in principals() {
                // on-send-batch: principal, count, messages.
                let input = pack_send_batch(&p, &views, &needs, 0);
                let mut reader = Reader::new(&input);
                let principal = reader.principal().expect("principal first");
                assert_eq!(principal_seen(&principal), expected_principal(&p));
                let got = reader.each_message(read);
                assert_eq!(got, expected);
                assert!(reader.rest().is_empty());
            }
            // filter-batch: count, messages.
            let mut input = Vec::new();
            pack_messages(&views, &needs, &mut input);
            let mut reader = Reader::new(&input);
            assert_eq!(reader.each_message(read), expected);
            assert!(reader.rest().is_empty());
        }
        // An empty batch is a zero count and nothing else.
        let mut input = Vec::new();
        pack_messages(&[], &needs(HeaderNeed::All, true), &mut input);
        assert_eq!(input, 0u32.to_le_bytes());
        assert!(Reader::new(&input).each_message(read).is_empty());
    }

    #[test]
    fn runs_respect_the_batch_size_and_put_an_oversize_message_alone() {
        let needs = needs(HeaderNeed::None, true);
        let cap = 1000;
        let sizes = [10usize, 10, 2000, 10, 800, 10];
        let msgs: Vec<PluginMessage> = sizes
            .iter()
            .map(|&n| message(b"/q", &[], &vec![b'x'; n]))
            .collect();
        let views: Vec<MessageRef<'_>> = msgs.iter().map(PluginMessage::view).collect();
        let runs = |max: usize| {
            let mut runs = Vec::new();
            let mut start = 0;
            while start < views.len() {
                let (run, _) = next_run_with(cap, &views, start, &needs, max);
                start = run.end;
                runs.push(run);
            }
            runs
        };
        assert_eq!(runs(64), [0..2, 2..3, 3..5, 5..6]);
        assert_eq!(runs(1), [0..1, 1..2, 2..3, 3..4, 4..5, 5..6]);
    }

    #[test]
    fn a_sampled_message_is_a_run_of_its_own() {
        let needs = needs(HeaderNeed::None, false);
        let msgs: Vec<PluginMessage> = (0..10).map(|_| message(b"/q", &[], b"x")).collect();
        let views: Vec<MessageRef<'_>> = msgs.iter().map(PluginMessage::view).collect();
        let runs = |sample: Sample| {
            let mut runs = Vec::new();
            let mut start = 0;
            while start < views.len() {
                let (run, _) = traced_run_with(1 << 20, &views, start, &needs, 64, sample);
                start = run.end;
                runs.push(run);
            }
            runs
        };
        let untraced = runs(Sample::OFF);
        assert_eq!((untraced.len(), &untraced[0]), (1, &(0..10)), "one batch");
        // One in 4, the counter at 2 before this batch: messages 2 and 6 are sampled.
        assert_eq!(
            runs(Sample::for_test(4, 2)),
            [0..2, 2..3, 3..6, 6..7, 7..10]
        );
        assert_eq!(
            runs(Sample::for_test(1, 0)).len(),
            10,
            "every message alone"
        );
    }

    /// Bytes: mostly ASCII, sometimes bytes that are not UTF-8.
    fn field() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![8 => b'a'..=b'e', 1 => Just(b'\xff'), 1 => Just(0xC3u8), 1 => Just(0x80u8)],
            0..12,
        )
    }

    proptest! {
        #[test]
        fn any_message_reads_as_its_projection(
            destination in field(),
            headers in prop::collection::vec((field(), field()), 0..8),
            body in prop::collection::vec(any::<u8>(), 0..64),
            need in 0usize..7,
        ) {
            let needs = all_needs().swap_remove(need);
            let headers: Vec<(&[u8], &[u8])> =
                headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let msg = message(&destination, &headers, &body);
            let mut out = Vec::new();
            convert::pack_message(msg.view(), &needs, &mut out);
            let mut reader = Reader::new(&out);
            let view = reader.message().expect("reads");
            prop_assert_eq!(read(&view), typed(&msg, &needs));
            prop_assert!(reader.rest().is_empty());
        }
    }

    #[test]
    fn a_composite_route_needs_rights_on_every_part() {
        let mut sender = Principal::named("s");
        sender.may_send = vec!["/queue/orders.*".to_string()];
        assert!(super::may_send_all(
            &sender,
            b"/queue/orders.eu,/queue/orders.us"
        ));
        assert!(
            super::may_send_all(&sender, b"/queue/orders.eu,orders.us"),
            "inherited prefix"
        );
        assert!(!super::may_send_all(
            &sender,
            b"/queue/orders.eu,/queue/secret"
        ));
        assert!(
            !super::may_send_all(&sender, b"/queue/orders.eu,,x"),
            "malformed"
        );
        assert!(
            sender.may_send(b"/queue/orders.eu,/queue/secret"),
            "the glob alone would allow it"
        );
    }
}
