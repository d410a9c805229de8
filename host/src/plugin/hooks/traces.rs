//! Recording the decisions of traced hook calls ([`super::super::trace`]): each hook's verdict
//! summarised, with who and what the call was about.

use super::super::trace::{self, Decision, Subject, TracedCall};
use super::super::{summary, AuthOutcome, AuthRequest, CallContext, FailurePolicy, MessageRef};
use super::super::{Plugin, Principal, SubscriptionInfo};
use super::{Chain, Failure, Stage, StageVerdict, SubscriptionFilter};
use super::{RedeliverEvent, RedeliverVerdict};

/// Records a traced `authenticate` call.
pub(super) fn authentication(
    plugin: &Plugin,
    context: &CallContext,
    req: &AuthRequest,
    result: &Result<AuthOutcome, Failure>,
    call: TracedCall,
) {
    let claimed = || req.login.as_deref().map(crate::text::shown);
    let (principal, verdict) = match result {
        Ok(AuthOutcome::Allow(p, expiry)) => {
            let until = expiry.map_or(String::new(), |ms| format!(" until {ms} (unix ms)"));
            let again = if req.reauth { " again" } else { "" };
            (
                Some(p.name.clone()),
                format!("authenticated {}{again}{until}", p.name),
            )
        }
        Ok(AuthOutcome::Deny(reason)) => (claimed(), format!("refused: {reason}")),
        Err(failure) => {
            let outcome = match plugin.failure {
                FailurePolicy::Closed => "refused (failure = closed)".to_string(),
                FailurePolicy::Open => {
                    format!("admitted as {} (failure = open)", plugin.fail_open.name)
                }
            };
            (claimed(), trace::failure_summary(failure, &outcome))
        }
    };
    let subject = Subject {
        principal,
        ..Subject::default()
    };
    let decision = trace::decision(
        &plugin.trace,
        "authenticate",
        context,
        subject,
        verdict,
        call,
    );
    plugin.trace.record(decision);
}

/// Records a traced `prepare-subscription` call.
pub(super) fn subscription(
    plugin: &Plugin,
    context: &CallContext,
    principal: &Principal,
    sub: &SubscriptionInfo,
    result: &Result<Result<Option<super::super::bindings::deliver::FilterPlan>, String>, Failure>,
    call: TracedCall,
) {
    let verdict = match result {
        Ok(Ok(Some(plan))) => format!("filter ({} byte token)", plan.token.len()),
        Ok(Ok(None)) => "no filter".to_string(),
        Ok(Err(reason)) => format!("refused: {reason}"),
        Err(failure) => trace::failure_summary(
            failure,
            match plugin.failure {
                FailurePolicy::Closed => "refused (failure = closed)",
                FailurePolicy::Open => "no filter (failure = open)",
            },
        ),
    };
    let subject = Subject {
        principal: Some(principal.name.clone()),
        subscription: Some(crate::text::shown(&sub.id)),
        destination: Some(crate::text::shown(&sub.destination)),
        ..Subject::default()
    };
    let hook = "prepare-subscription";
    let decision = trace::decision(&plugin.trace, hook, context, subject, verdict, call);
    plugin.trace.record(decision);
}

/// The decision of a traced call about `msg` (its message id is filled in by the chain).
pub(super) fn send(
    plugin: &Plugin,
    context: &CallContext,
    msg: MessageRef<'_>,
    verdict: Result<String, &Failure>,
    call: TracedCall,
) -> Decision {
    let verdict = verdict.unwrap_or_else(|failure| {
        let outcome = match plugin.failure {
            FailurePolicy::Closed => "rejected (failure = closed)",
            FailurePolicy::Open => "ignored (failure = open)",
        };
        trace::failure_summary(failure, outcome)
    });
    let subject = Subject {
        destination: Some(crate::text::shown(msg.destination)),
        ..Subject::default()
    };
    trace::decision(&plugin.trace, "send", context, subject, verdict, call)
}

/// Records the decision of a traced filter call about `msg` (nothing when not traced).
pub(super) fn filter<V: std::borrow::Borrow<StageVerdict>, F: std::borrow::Borrow<Failure>>(
    filter: &SubscriptionFilter,
    stage: &Stage,
    msg: MessageRef<'_>,
    result: &Result<V, F>,
    call: Option<TracedCall>,
) {
    let Some(call) = call else {
        return;
    };
    let plugin = &*stage.plugin;
    let verdict = match result {
        Ok(v) => match v.borrow() {
            StageVerdict::Deliver => "deliver".to_string(),
            StageVerdict::Skip => "skip".to_string(),
            StageVerdict::Rewrite(m) => summary::filter_rewrite(
                msg.destination,
                &m.destination,
                m.headers != msg.headers,
                m.body != *msg.body,
            ),
        },
        Err(failure) => trace::failure_summary(
            failure.borrow(),
            match plugin.failure {
                FailurePolicy::Closed => "not delivered now (failure = closed)",
                FailurePolicy::Open => "delivered (failure = open)",
            },
        ),
    };
    let subject = Subject {
        message_id: msg.id.map(|(prefix, seq)| format!("{prefix}-{seq}")),
        principal: Some(filter.subscriber.clone()),
        subscription: Some(filter.subscription.clone()),
        destination: Some(crate::text::shown(msg.destination)),
    };
    let decision = trace::decision(
        &plugin.trace,
        "filter",
        &filter.context,
        subject,
        verdict,
        call,
    );
    plugin.trace.record(decision);
}

/// Records a traced `redeliver` call: the verdict, or what a failed call falls back to.
pub(super) fn redelivery(
    plugin: &Plugin,
    context: &CallContext,
    event: RedeliverEvent<'_>,
    result: &Result<RedeliverVerdict, Failure>,
    call: TracedCall,
) {
    let why = format!("{}, {} deliveries", event.cause.as_str(), event.deliveries);
    let verdict = match result {
        Ok(RedeliverVerdict::Redeliver) => format!("{why}: redeliver now"),
        Ok(RedeliverVerdict::After(delay)) => {
            format!("{why}: redeliver after {} ms", delay.as_millis())
        }
        Ok(RedeliverVerdict::DeadLetter {
            destination,
            reason,
            ..
        }) => format!(
            "{why}: dead-letter to {} ({reason})",
            crate::text::shown(destination)
        ),
        Ok(RedeliverVerdict::Drop) => format!("{why}: drop"),
        Ok(RedeliverVerdict::Fallback) => format!("{why}: built-in [dead_letter] behaviour"),
        Err(failure) => trace::failure_summary(
            failure,
            &format!("{why}: built-in [dead_letter] behaviour applies"),
        ),
    };
    let subject = Subject {
        message_id: event
            .message
            .id
            .map(|(prefix, seq)| format!("{prefix}-{seq}")),
        destination: Some(crate::text::shown(event.queue)),
        ..Subject::default()
    };
    let decision = trace::decision(&plugin.trace, "redeliver", context, subject, verdict, call);
    plugin.trace.record(decision);
}

impl Chain {
    /// Records the traced decisions of the run, each about input message `i`, with the
    /// `message-id` that message's first copy is published under when the session publishes
    /// what the chain made in order from sequence number `next_message` (none for a message
    /// that was dropped or rejected).
    pub(super) fn record(
        &self,
        traced: Vec<(usize, &Plugin, Decision)>,
        context: &CallContext,
        next_message: u64,
    ) {
        let mut first = Vec::with_capacity(self.alive);
        let mut seq = next_message;
        for n in self.counts() {
            first.push((n > 0).then_some(seq));
            seq += n as u64;
        }
        for (i, plugin, mut decision) in traced {
            decision.message_id = first
                .get(i)
                .copied()
                .flatten()
                .map(|seq| format!("{}-{seq}", context.session));
            plugin.trace.record(decision);
        }
    }
}
