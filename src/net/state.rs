//! NetState filtering: which layers of a NetParameter exist in a given phase / level / stage.
use anyhow::{Result, bail};

use crate::proto::{LayerParameter, NetParameter, NetState, NetStateRule, Phase};

/// Does `rule` match `state`? (Caffe's Net::StateMeetsRule.)
pub fn rule_matches(state: &NetState, rule: &NetStateRule) -> bool {
    if rule.phase.is_some() && rule.phase() != state.phase() {
        return false;
    }
    if rule.min_level.is_some() && state.level() < rule.min_level() {
        return false;
    }
    if rule.max_level.is_some() && state.level() > rule.max_level() {
        return false;
    }
    if !rule.stage.iter().all(|s| state.stage.contains(s)) {
        return false;
    }
    !rule.not_stage.iter().any(|s| state.stage.contains(s))
}

/// Is the layer part of the net in `state`? A layer has include rules or exclude rules, never both.
pub fn layer_included(state: &NetState, layer: &LayerParameter) -> Result<bool> {
    if !layer.include.is_empty() && !layer.exclude.is_empty() {
        bail!(
            "layer '{}' specifies both include and exclude rules; specify only one of them",
            layer.name()
        );
    }
    if !layer.include.is_empty() {
        Ok(layer.include.iter().any(|r| rule_matches(state, r)))
    } else {
        Ok(!layer.exclude.iter().any(|r| rule_matches(state, r)))
    }
}

/// Caffe's Net::FilterNet: the layers of `net` that exist in `state`.
pub fn filter_net(net: &NetParameter, state: &NetState) -> Result<NetParameter> {
    let mut out = net.clone();
    out.layer.clear();
    for layer in &net.layer {
        if layer_included(state, layer)? {
            out.layer.push(layer.clone());
        }
    }
    Ok(out)
}

/// The state a tool asks for: the net's own `state` merged with phase, level and stages.
pub fn make_state(net: &NetParameter, phase: Phase, level: i32, stages: &[String]) -> NetState {
    let mut state = net.state.clone().unwrap_or_default();
    state.phase = Some(phase as i32);
    state.level = Some(level);
    for s in stages {
        if !state.stage.contains(s) {
            state.stage.push(s.clone());
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        phase: Option<Phase>,
        min: Option<i32>,
        max: Option<i32>,
        stage: &[&str],
        not: &[&str],
    ) -> NetStateRule {
        NetStateRule {
            phase: phase.map(|p| p as i32),
            min_level: min,
            max_level: max,
            stage: stage.iter().map(|s| s.to_string()).collect(),
            not_stage: not.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn state(phase: Phase, level: i32, stage: &[&str]) -> NetState {
        NetState {
            phase: Some(phase as i32),
            level: Some(level),
            stage: stage.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rules_follow_caffe() {
        let train = state(Phase::Train, 0, &[]);
        assert!(rule_matches(
            &train,
            &rule(Some(Phase::Train), None, None, &[], &[])
        ));
        assert!(!rule_matches(
            &train,
            &rule(Some(Phase::Test), None, None, &[], &[])
        ));
        assert!(rule_matches(
            &state(Phase::Test, 2, &[]),
            &rule(None, Some(1), Some(3), &[], &[])
        ));
        assert!(!rule_matches(
            &state(Phase::Test, 4, &[]),
            &rule(None, Some(1), Some(3), &[], &[])
        ));
        assert!(rule_matches(
            &state(Phase::Test, 0, &["a", "b"]),
            &rule(None, None, None, &["a", "b"], &[])
        ));
        assert!(!rule_matches(
            &state(Phase::Test, 0, &["a"]),
            &rule(None, None, None, &["a", "b"], &[])
        ));
        assert!(!rule_matches(
            &state(Phase::Test, 0, &["a", "x"]),
            &rule(None, None, None, &["a"], &["x"])
        ));
    }

    #[test]
    fn include_and_exclude() {
        let mut layer = LayerParameter {
            name: Some("l".into()),
            ..Default::default()
        };
        let test = state(Phase::Test, 0, &[]);
        assert!(layer_included(&test, &layer).unwrap());
        layer
            .exclude
            .push(rule(Some(Phase::Test), None, None, &[], &[]));
        assert!(!layer_included(&test, &layer).unwrap());
        layer
            .include
            .push(rule(Some(Phase::Test), None, None, &[], &[]));
        assert!(layer_included(&test, &layer).is_err());
        layer.exclude.clear();
        assert!(layer_included(&test, &layer).unwrap());
        assert!(!layer_included(&state(Phase::Train, 0, &[]), &layer).unwrap());
    }
}
