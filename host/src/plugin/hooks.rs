//! The hook calls and their chains: authenticate (one authenticator), the send chain (config
//! order, fan-out flows through later plugins), and per-subscription filter chains prepared at
//! SUBSCRIBE. Every call goes through [`call!`]: check out an instance, arm the deadline, call,
//! convert and validate the answer, hand the instance back; a failure applies the plugin's policy.
//! A plugin that exports the optional fast paths (`send-packed`, `deliver-batch` in the WIT) is
//! called through them: the message packed into one byte list, and a subscription's deliveries
//! filtered a batch at a time ([`SubscriptionFilter::filter_batch`]).

use std::sync::Arc;

use super::bindings::authenticate::{AuthRequest as WitAuthRequest, AuthResult};
use super::bindings::deliver::{FilterVerdict, Subscription};
use super::bindings::send::SendVerdict;
use super::bindings::types::{Needs, Principal as WitPrincipal};
use super::convert::{self, MAX_FANOUT};
use super::pool::{Failure, FailureKind};
use super::{
    AuthOutcome, AuthRequest, FailurePolicy, FilterOutcome, Hook, MessageRef, Plugin, PluginHost,
    PluginMessage, Principal, SendOutcome, SubscriptionInfo,
};

/// Largest filter token a plugin may hand back from `prepare-subscription`.
const MAX_TOKEN: usize = 64 * 1024;
/// Most deliveries passed to one `filter-batch` call, and messages to one `on-send-batch` call.
const MAX_BATCH: usize = 64;

/// Calls one export of `plugin` under its limits. `$call` uses `$g` (the typed exports of the
/// interface) and `$s` (the store); `$convert` turns the guest's answer into the host's or into
/// an error string, which counts as invalid output.
macro_rules! call {
    ($plugin:expr, $hook:expr, $export:ident, |$g:ident, $s:ident| $call:expr, |$ok:ident| $convert:expr) => {{
        let plugin: &Plugin = $plugin;
        let budget = plugin.deadline($hook);
        match plugin.pool.checkout($hook, budget).await {
            Err(failure) => Err(failure),
            Ok(mut lease) => {
                // The call gets its whole budget: instantiating a replacement instance during
                // checkout (bounded by its own init deadline) is not charged to it; for a
                // Python guest that alone takes more than a 5 ms filter deadline.
                lease.warm.arm(budget);
                let warm = &mut lease.warm;
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
                plugin.pool.finish($hook, lease, result)
            }
        }
    }};
}

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

fn failed(plugin: &Plugin) -> String {
    format!("plugin `{}` failed", plugin.name)
}

/// Applies a checked send verdict (see [`check_verdict`]) to the message it was given for,
/// which the caller owns: the messages it becomes go to `push` (a single rewrite edits the
/// message in place; a fan-out copies it per edit). `Some(reason)` when it was rejected.
fn apply_verdict(
    msg: PluginMessage,
    verdict: SendVerdict,
    mut push: impl FnMut(PluginMessage),
) -> Option<String> {
    match verdict {
        SendVerdict::Keep => push(msg),
        SendVerdict::Rewrite(edit) => push(convert::apply_checked(msg, edit, true)),
        SendVerdict::FanOut(mut edits) => {
            let last = edits.pop();
            for edit in edits {
                push(convert::apply_checked(msg.clone(), edit, true));
            }
            if let Some(edit) = last {
                push(convert::apply_checked(msg, edit, true));
            }
        }
        SendVerdict::Reject(reason) => return Some(convert::reason(reason)),
    }
    None
}

impl PluginHost {
    /// Whether a plugin serves the authenticate hook (else every client is anonymous).
    pub fn has_authenticator(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| p.hooks.contains(&Hook::Authenticate))
    }

    /// Runs the authenticator (fails closed unless configured open).
    pub async fn authenticate(&self, req: AuthRequest) -> AuthOutcome {
        let Some(plugin) = self
            .plugins
            .iter()
            .find(|p| p.hooks.contains(&Hook::Authenticate))
        else {
            return AuthOutcome::Allow(Principal::anonymous());
        };
        let hook = Hook::Authenticate;
        let size: usize = req
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 16)
            .sum();
        let result = match check_size(plugin, hook, size) {
            Err(f) => Err(f),
            Ok(()) => {
                let request = WitAuthRequest {
                    login: req.login.as_deref().map(convert::text),
                    passcode: req.passcode.as_deref().map(convert::text),
                    host: req.host.as_deref().map(convert::text),
                    client_addr: req.client_addr.to_string(),
                    headers: convert::wit_headers(&req.headers),
                };
                call!(
                    plugin,
                    hook,
                    auth,
                    |g, s| g.call_authenticate(s, &request),
                    |answer| match answer {
                        AuthResult::Allow(p) => convert::principal(p).map(AuthOutcome::Allow),
                        AuthResult::Deny(reason) => Ok(AuthOutcome::Deny(convert::reason(reason))),
                    }
                )
            }
        };
        result.unwrap_or_else(|_| match plugin.failure {
            FailurePolicy::Closed => AuthOutcome::Deny("authentication is unavailable".into()),
            FailurePolicy::Open => {
                let name = req
                    .login
                    .as_deref()
                    .map(convert::text)
                    .unwrap_or_else(|| "anonymous".into());
                AuthOutcome::Allow(Principal::named(name))
            }
        })
    }

    /// True when some plugin's send hook matches this destination (unmatched destinations pay nothing).
    pub fn intercepts_send(&self, destination: &[u8]) -> bool {
        self.plugins
            .iter()
            .any(|p| p.applies_to(Hook::Send, destination))
    }

    /// Runs the send chain in config order; each message a plugin produces goes on through the
    /// later plugins whose destinations match it.
    pub async fn on_send(&self, principal: &Principal, msg: PluginMessage) -> SendOutcome {
        // Converted for the first plugin that takes it unpacked (`send.on-send`), if any.
        let mut sender: Option<WitPrincipal> = None;
        let mut current = vec![msg];
        for plugin in self
            .plugins
            .iter()
            .filter(|p| p.hooks.contains(&Hook::Send))
        {
            let mut next = Vec::with_capacity(current.len());
            for msg in current {
                if !plugin.applies_to(Hook::Send, &msg.destination) {
                    next.push(msg);
                    continue;
                }
                let result = if plugin.pool.packs_send() {
                    call_send_packed(plugin, principal, &msg).await
                } else {
                    let sender = sender.get_or_insert_with(|| convert::wit_principal(principal));
                    call_send(plugin, sender, &msg).await
                };
                match result {
                    Ok(verdict) => {
                        if let Some(reason) = apply_verdict(msg, verdict, |m| next.push(m)) {
                            return SendOutcome::Reject(reason);
                        }
                    }
                    Err(_) if plugin.failure == FailurePolicy::Open => next.push(msg),
                    Err(_) => return SendOutcome::Reject(failed(plugin)),
                }
                if next.len() > MAX_FANOUT {
                    return SendOutcome::Reject(format!(
                        "plugin `{}` fanned out to more than {MAX_FANOUT} messages",
                        plugin.name
                    ));
                }
            }
            current = next;
        }
        SendOutcome::Deliver(current)
    }

    /// Whether some send plugin takes several messages per call (`send-batch`): then a
    /// session hands pipelined SENDs to [`on_send_batch`](Self::on_send_batch).
    pub fn batches_send(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| p.hooks.contains(&Hook::Send) && p.pool.batches_send())
    }

    /// The send chain for several messages of one sender, as [`on_send`](Self::on_send) would
    /// run it for each in turn, but with one call per plugin for the whole batch where the plugin
    /// exports `send-batch` (chunks of at most 64 within its input cap; a failed call applies
    /// its failure policy to every message of it). Each plugin sees the messages the previous
    /// one produced, in order (a fan-out's copies included).
    ///
    /// The outcomes are those of a prefix of `msgs`: processing stops at the first message that
    /// is rejected, whose `Reject` is the last outcome (later plugins no longer see it or the
    /// messages after it; plugins before the rejecting one already have).
    pub async fn on_send_batch(
        &self,
        principal: &Principal,
        msgs: Vec<PluginMessage>,
    ) -> Vec<SendOutcome> {
        // Every message as the chain so far made it, in order, with the index of the input
        // message it came from; the input messages still in play are those before `alive`.
        let mut alive = msgs.len();
        let mut current: Vec<(usize, PluginMessage)> = msgs.into_iter().enumerate().collect();
        let mut rejected: Option<String> = None;
        let mut sender: Option<WitPrincipal> = None;
        let mut applies: Vec<bool> = Vec::new();
        for plugin in self
            .plugins
            .iter()
            .filter(|p| p.hooks.contains(&Hook::Send))
        {
            applies.clear();
            applies.extend(
                current
                    .iter()
                    .map(|(_, m)| plugin.applies_to(Hook::Send, &m.destination)),
            );
            let inputs: Vec<MessageRef<'_>> = current
                .iter()
                .zip(&applies)
                .filter(|(_, &a)| a)
                .map(|((_, m), _)| m.view())
                .collect();
            if inputs.is_empty() {
                continue;
            }
            let mut results = Vec::with_capacity(inputs.len());
            send_many(plugin, principal, &mut sender, &inputs, &mut results).await;
            drop(inputs);
            let mut results = results.into_iter();
            let mut next: Vec<(usize, PluginMessage)> = Vec::with_capacity(current.len());
            // Where the copies of input message `at` start in `next`.
            let (mut at, mut start) = (usize::MAX, 0);
            for ((i, msg), &applies) in current.into_iter().zip(&applies) {
                if i != at {
                    (at, start) = (i, next.len());
                }
                if !applies {
                    next.push((i, msg));
                    continue;
                }
                let mut reject = match results.next().expect("one result per applicable message") {
                    Ok(verdict) => apply_verdict(msg, verdict, |m| next.push((i, m))),
                    Err(()) if plugin.failure == FailurePolicy::Open => {
                        next.push((i, msg));
                        None
                    }
                    Err(()) => Some(failed(plugin)),
                };
                if reject.is_none() && next.len() - start > MAX_FANOUT {
                    reject = Some(format!(
                        "plugin `{}` fanned out to more than {MAX_FANOUT} messages",
                        plugin.name
                    ));
                }
                if reject.is_some() {
                    // Nothing from this input message on goes further. A reject by an earlier
                    // plugin was for a later message, so this one replaces it; later plugins
                    // still see the messages before it (and may reject one of those).
                    next.truncate(start);
                    (rejected, alive) = (reject, i);
                    break;
                }
            }
            current = next;
        }
        let mut outcomes: Vec<Vec<PluginMessage>> = (0..alive).map(|_| Vec::new()).collect();
        for (i, msg) in current {
            outcomes[i].push(msg);
        }
        let mut outcomes: Vec<SendOutcome> =
            outcomes.into_iter().map(SendOutcome::Deliver).collect();
        outcomes.extend(rejected.map(SendOutcome::Reject));
        outcomes
    }

    /// Called at SUBSCRIBE. Err(reason) = the SUBSCRIBE is refused (e.g. malformed selector,
    /// reason says where). Ok(None) = no filter applies: deliveries pay nothing.
    pub async fn prepare_subscription(
        &self,
        principal: &Principal,
        sub: SubscriptionInfo,
    ) -> Result<Option<Arc<SubscriptionFilter>>, String> {
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
            let result = match check_size(plugin, hook, size) {
                Err(f) => Err(f),
                Ok(()) => call!(
                    plugin,
                    hook,
                    deliver,
                    |g, s| g.call_prepare_subscription(s, &subscriber, &info),
                    |answer| match answer {
                        Ok(Some(plan)) if plan.token.len() > MAX_TOKEN =>
                            Err(format!("filter token of {} bytes", plan.token.len())),
                        other => Ok(other),
                    }
                ),
            };
            match result {
                Ok(Ok(Some(plan))) => stages.push(Stage {
                    plugin: plugin.clone(),
                    token: plan.token,
                    needs: plan.needs,
                }),
                Ok(Ok(None)) => {}
                Ok(Err(reason)) => return Err(convert::reason(reason)),
                Err(_) if plugin.failure == FailurePolicy::Open => {}
                Err(_) => return Err(failed(plugin)),
            }
        }
        Ok((!stages.is_empty()).then(|| Arc::new(SubscriptionFilter { stages })))
    }
}

async fn call_send(
    plugin: &Plugin,
    sender: &WitPrincipal,
    msg: &PluginMessage,
) -> Result<SendVerdict, Failure> {
    call_send_ref(plugin, sender, msg.view()).await
}

async fn call_send_ref(
    plugin: &Plugin,
    sender: &WitPrincipal,
    msg: MessageRef<'_>,
) -> Result<SendVerdict, Failure> {
    let needs = &plugin.manifest.send;
    check_size(plugin, Hook::Send, convert::input_size(msg, needs))?;
    let projected = convert::project(msg, needs);
    call!(
        plugin,
        Hook::Send,
        send,
        |g, s| g.call_on_send(s, sender, &projected),
        |verdict| check_verdict(plugin, verdict)
    )
}

/// [`call_send`] through `send-packed.on-send-packed`: one byte list instead of a string per
/// field, and no conversion of the principal.
async fn call_send_packed(
    plugin: &Plugin,
    sender: &Principal,
    msg: &PluginMessage,
) -> Result<SendVerdict, Failure> {
    call_send_packed_ref(plugin, sender, msg.view()).await
}

async fn call_send_packed_ref(
    plugin: &Plugin,
    sender: &Principal,
    msg: MessageRef<'_>,
) -> Result<SendVerdict, Failure> {
    let needs = &plugin.manifest.send;
    let size = convert::input_size(msg, needs);
    check_size(plugin, Hook::Send, size)?;
    let mut input = Vec::with_capacity(size + 128);
    convert::pack_principal(sender, &mut input);
    convert::pack_message(msg, needs, &mut input);
    call!(
        plugin,
        Hook::Send,
        send_packed,
        |g, s| g.call(s, &input),
        |verdict| check_verdict(plugin, verdict)
    )
}

/// Runs one send plugin over `msgs`, pushing one result per message onto `out`: in
/// `send-batch` calls when the plugin exports it, else one call each.
async fn send_many(
    plugin: &Plugin,
    principal: &Principal,
    sender: &mut Option<WitPrincipal>,
    msgs: &[MessageRef<'_>],
    out: &mut Vec<Result<SendVerdict, ()>>,
) {
    let needs = &plugin.manifest.send;
    let mut one = async |msg: MessageRef<'_>| {
        let result = if plugin.pool.packs_send() {
            call_send_packed_ref(plugin, principal, msg).await
        } else {
            let sender = sender.get_or_insert_with(|| convert::wit_principal(principal));
            call_send_ref(plugin, sender, msg).await
        };
        result.map_err(drop)
    };
    if msgs.len() < 2 || !plugin.pool.batches_send() {
        for &msg in msgs {
            out.push(one(msg).await);
        }
        return;
    }
    // Chunks of at most MAX_BATCH messages within the plugin's input cap; a message that alone
    // exceeds the cap fails on its own, as with `on-send`.
    let mut start = 0;
    while start < msgs.len() {
        let mut end = start;
        let mut size = 0usize;
        while end < msgs.len() && end - start < MAX_BATCH {
            let s = convert::input_size(msgs[end], needs) + 64;
            if size + s > plugin.max_input {
                break;
            }
            size += s;
            end += 1;
        }
        if end == start {
            out.push(one(msgs[start]).await);
            start += 1;
            continue;
        }
        match call_send_batch(plugin, principal, &msgs[start..end], size).await {
            Ok(results) => out.extend(results.into_iter().map(Ok)),
            Err(_) => out.extend((start..end).map(|_| Err(()))),
        }
        start = end;
    }
}

/// One `send-batch` call for `msgs` (non-empty, within the input cap, `size` bytes projected).
async fn call_send_batch(
    plugin: &Plugin,
    principal: &Principal,
    msgs: &[MessageRef<'_>],
    size: usize,
) -> Result<Vec<SendVerdict>, Failure> {
    let needs = &plugin.manifest.send;
    let mut input = Vec::with_capacity(size + 132);
    convert::pack_principal(principal, &mut input);
    input.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
    for &msg in msgs {
        convert::pack_message(msg, needs, &mut input);
    }
    call!(
        plugin,
        Hook::Send,
        send_batch,
        |g, s| g.call(s, &input),
        |verdicts| if verdicts.len() != msgs.len() {
            Err(format!(
                "on-send-batch returned {} verdicts for {} messages",
                verdicts.len(),
                msgs.len()
            ))
        } else {
            verdicts
                .into_iter()
                .map(|verdict| check_verdict(plugin, verdict))
                .collect()
        }
    )
}

/// Checks a send verdict (its edits are applied by [`apply_verdict`]).
fn check_verdict(plugin: &Plugin, verdict: SendVerdict) -> Result<SendVerdict, String> {
    let max_body = plugin.max_input;
    match &verdict {
        SendVerdict::Keep | SendVerdict::Reject(_) => {}
        SendVerdict::Rewrite(edit) => convert::check_edit(edit, max_body)?,
        SendVerdict::FanOut(edits) if edits.len() > MAX_FANOUT => {
            return Err(format!("fan-out to {} messages", edits.len()))
        }
        SendVerdict::FanOut(edits) => {
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

/// The filters prepared for one subscription, run in config order for each delivery.
pub struct SubscriptionFilter {
    stages: Vec<Stage>,
}

impl SubscriptionFilter {
    /// Runs the chain for one delivery: skip wins, rewrites compose.
    pub async fn filter(&self, msg: &PluginMessage) -> FilterOutcome {
        self.filter_one(msg.view()).await
    }

    async fn filter_one(&self, msg: MessageRef<'_>) -> FilterOutcome {
        let mut rewritten: Option<PluginMessage> = None;
        for stage in &self.stages {
            let current = rewritten.as_ref().map_or(msg, PluginMessage::view);
            match call_filter(stage, current).await {
                Ok(None) => {}
                Ok(Some(Some(m))) => rewritten = Some(m),
                Ok(Some(None)) => return FilterOutcome::Skip,
                Err(_) if stage.plugin.failure == FailurePolicy::Open => {}
                Err(_) => return FilterOutcome::Skip,
            }
        }
        rewritten.map_or(FilterOutcome::Deliver, FilterOutcome::Rewrite)
    }

    /// Runs the chain for several deliveries of this subscription; one outcome per message, in
    /// order, the same as [`filter`](Self::filter) would give each. A plugin that exports
    /// `deliver-batch` gets them in as few calls as its input cap allows (a failed call then
    /// applies its failure policy to every message of that call); others get one call each.
    pub async fn filter_batch(&self, msgs: &[MessageRef<'_>]) -> Vec<FilterOutcome> {
        if let [msg] = msgs {
            // The common case under light load: no bookkeeping for a batch.
            return vec![self.filter_one(*msg).await];
        }
        // Per message: `None` once skipped, else the message as rewritten so far (if at all).
        let mut state: Vec<Option<Option<PluginMessage>>> = vec![Some(None); msgs.len()];
        let mut alive: Vec<usize> = (0..msgs.len()).collect();
        let mut verdicts = Vec::with_capacity(msgs.len());
        for stage in &self.stages {
            alive.retain(|&i| state[i].is_some());
            if alive.is_empty() {
                break;
            }
            let current: Vec<MessageRef<'_>> = alive
                .iter()
                .map(|&i| match &state[i] {
                    Some(Some(m)) => m.view(),
                    _ => msgs[i],
                })
                .collect();
            verdicts.clear();
            stage_many(stage, &current, &mut verdicts).await;
            drop(current);
            for (&i, verdict) in alive.iter().zip(verdicts.drain(..)) {
                match verdict {
                    Ok(None) => {}
                    Ok(Some(Some(m))) => state[i] = Some(Some(m)),
                    Ok(Some(None)) => state[i] = None,
                    Err(()) if stage.plugin.failure == FailurePolicy::Open => {}
                    Err(()) => state[i] = None,
                }
            }
        }
        state
            .into_iter()
            .map(|s| match s {
                None => FilterOutcome::Skip,
                Some(None) => FilterOutcome::Deliver,
                Some(Some(m)) => FilterOutcome::Rewrite(m),
            })
            .collect()
    }
}

/// What one stage decided for one message (see [`call_filter`]); `Err` = the call failed.
type StageVerdict = Result<Option<Option<PluginMessage>>, ()>;

/// Runs one stage over `msgs`, pushing one verdict per message onto `out`.
async fn stage_many(stage: &Stage, msgs: &[MessageRef<'_>], out: &mut Vec<StageVerdict>) {
    let plugin = &*stage.plugin;
    if msgs.len() < 2 || !plugin.pool.batches() {
        for &msg in msgs {
            out.push(call_filter(stage, msg).await.map_err(drop));
        }
        return;
    }
    // Chunks of at most MAX_BATCH messages within the plugin's input cap; a message that alone
    // exceeds the cap fails on its own, as with `filter`.
    let mut start = 0;
    while start < msgs.len() {
        let mut end = start;
        let mut size = 0usize;
        let mut oversize = false;
        while end < msgs.len() && end - start < MAX_BATCH {
            let s = convert::input_size(msgs[end], &stage.needs) + 64;
            if size + s > plugin.max_input {
                oversize = end == start;
                break;
            }
            size += s;
            end += 1;
        }
        if oversize {
            // Refused by `check_size` there (or, right at the cap, called on its own).
            out.push(call_filter(stage, msgs[start]).await.map_err(drop));
            start += 1;
            continue;
        }
        match call_filter_batch(stage, &msgs[start..end], size).await {
            Ok(verdicts) => out.extend(verdicts.into_iter().map(Ok)),
            Err(_) => out.extend((start..end).map(|_| Err(()))),
        }
        start = end;
    }
}

/// One `filter-batch` call for `msgs` (non-empty, within the input cap, `size` bytes projected).
async fn call_filter_batch(
    stage: &Stage,
    msgs: &[MessageRef<'_>],
    size: usize,
) -> Result<Vec<Option<Option<PluginMessage>>>, Failure> {
    let plugin = &*stage.plugin;
    let mut packed = Vec::with_capacity(size + 4);
    packed.extend_from_slice(&(msgs.len() as u32).to_le_bytes());
    for &msg in msgs {
        convert::pack_message(msg, &stage.needs, &mut packed);
    }
    let max_body = plugin.max_input;
    call!(
        plugin,
        Hook::Message,
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
                .map(|(verdict, &msg)| match verdict {
                    FilterVerdict::Deliver => Ok(None),
                    FilterVerdict::Skip => Ok(Some(None)),
                    FilterVerdict::Rewrite(edit) => {
                        convert::apply_edit(msg, edit, max_body).map(|m| Some(Some(m)))
                    }
                })
                .collect()
        }
    )
}

/// `Ok(None)`: deliver; `Ok(Some(None))`: skip; `Ok(Some(Some(m)))`: deliver `m` instead.
async fn call_filter(
    stage: &Stage,
    msg: MessageRef<'_>,
) -> Result<Option<Option<PluginMessage>>, Failure> {
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
        deliver,
        |g, s| g.call_filter(s, &stage.token, &projected),
        |verdict| match verdict {
            FilterVerdict::Deliver => Ok(None),
            FilterVerdict::Skip => Ok(Some(None)),
            FilterVerdict::Rewrite(edit) =>
                convert::apply_edit(msg, edit, max_body).map(|m| Some(Some(m))),
        }
    )
}
