//! The autoscale decision, pure: from vCPU-time samples to a number of
//! instances, the way Kubernetes' HorizontalPodAutoscaler decides
//! (`desired = ceil(current × utilization / target)`, a 10 % tolerance
//! band, scale-up at once, scale-down to the highest recommendation of
//! the last cool-down window), with a cool-down after every change.

use std::collections::VecDeque;

use crate::topology::desired::Autoscale;

/// No change while utilization / target is within 1 ± this.
pub const TOLERANCE: f64 = 0.1;

/// One reading of an instance: its vCPU time, its uptime and its vCPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// vCPU seconds (all vCPUs summed) since the VMM started.
    pub vcpu_cpu_s: f64,
    /// Seconds since the VMM started.
    pub uptime_s: f64,
    /// vCPUs.
    pub vcpus: u32,
}

/// Average utilization (0.0–1.0 per vCPU) between two readings of the same
/// run, or None when they are not comparable (a restart in between).
pub fn utilization(before: &Sample, after: &Sample) -> Option<f64> {
    let dt = after.uptime_s - before.uptime_s;
    let used = after.vcpu_cpu_s - before.vcpu_cpu_s;
    if dt <= 0.0 || used < 0.0 || after.vcpus == 0 {
        return None;
    }
    Some((used / dt / f64::from(after.vcpus)).min(1.0))
}

/// The instance count the rule asks for at `average` utilization (0.0–1.0)
/// with `current` instances, before cool-down and stabilization.
pub fn recommend(rule: &Autoscale, current: u32, average: f64) -> u32 {
    let current = current.max(1);
    let ratio = average * 100.0 / f64::from(rule.target_cpu_percent.max(1));
    let wanted = if (ratio - 1.0).abs() <= TOLERANCE {
        current
    } else {
        // At most the largest scale set: the float is small and positive.
        (f64::from(current) * ratio).ceil().clamp(0.0, 1000.0) as u32
    };
    wanted.clamp(rule.min_replicas, rule.max_replicas)
}

/// The control loop's memory: when it last changed the set and what it
/// recommended lately.
#[derive(Debug, Clone)]
pub struct Decider {
    rule: Autoscale,
    last_change: Option<f64>,
    history: VecDeque<(f64, u32)>,
}

impl Decider {
    /// A decider that has not changed anything yet.
    pub fn new(rule: Autoscale) -> Self {
        Decider {
            rule,
            last_change: None,
            history: VecDeque::new(),
        }
    }

    /// Notes that the set was changed at `now` (seconds, any origin).
    pub fn changed(&mut self, now: f64) {
        self.last_change = Some(now);
    }

    /// The new instance count at `now`, if the set should change.
    /// `average` is None when no instance could be measured yet (all are
    /// booting): then only the rule's range is enforced.
    pub fn decide(&mut self, now: f64, current: u32, average: Option<f64>) -> Option<u32> {
        let (min, max) = (self.rule.min_replicas, self.rule.max_replicas);
        if current < min || current > max {
            return Some(current.clamp(min, max));
        }
        let average = average?;
        let wanted = recommend(&self.rule, current, average);
        let window = f64::from(self.rule.cooldown_seconds);
        self.history.push_back((now, wanted));
        while self.history.front().is_some_and(|(t, _)| now - t > window) {
            self.history.pop_front();
        }
        if self.last_change.is_some_and(|t| now - t < window) {
            return None;
        }
        if wanted > current {
            return Some(wanted);
        }
        // Down only as far as every recommendation of the window allows,
        // so a short lull does not remove instances a burst needs again.
        let stable = self
            .history
            .iter()
            .map(|(_, w)| *w)
            .max()
            .unwrap_or(current);
        (stable < current).then_some(stable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Autoscale = Autoscale {
        min_replicas: 1,
        max_replicas: 5,
        target_cpu_percent: 50,
        cooldown_seconds: 60,
    };

    #[test]
    fn utilization_between_samples() {
        let a = Sample {
            vcpu_cpu_s: 10.0,
            uptime_s: 100.0,
            vcpus: 2,
        };
        let b = Sample {
            vcpu_cpu_s: 15.0,
            uptime_s: 105.0,
            vcpus: 2,
        };
        assert_eq!(utilization(&a, &b), Some(0.5));
        assert_eq!(utilization(&b, &a), None, "restarted in between");
        assert_eq!(utilization(&a, &a), None);
    }

    #[test]
    fn recommendation_follows_the_hpa_formula() {
        assert_eq!(recommend(&RULE, 2, 0.5), 2, "on target");
        assert_eq!(recommend(&RULE, 2, 0.54), 2, "within tolerance");
        assert_eq!(recommend(&RULE, 2, 0.9), 4, "ceil(2 × 1.8)");
        assert_eq!(recommend(&RULE, 2, 1.0), 4);
        assert_eq!(recommend(&RULE, 4, 1.0), 5, "at most max");
        assert_eq!(recommend(&RULE, 4, 0.1), 1, "ceil(4 × 0.2)");
        assert_eq!(recommend(&RULE, 3, 0.0), 1, "at least min");
    }

    #[test]
    fn cooldown_and_scale_down_stabilization() {
        let mut d = Decider::new(RULE);
        assert_eq!(d.decide(0.0, 1, None), None, "nothing measured yet");
        assert_eq!(d.decide(0.0, 0, None), Some(1), "below min at once");
        assert_eq!(d.decide(15.0, 1, Some(1.0)), Some(2));
        d.changed(15.0);
        assert_eq!(d.decide(30.0, 2, Some(1.0)), None, "cooling down");
        assert_eq!(d.decide(80.0, 2, Some(1.0)), Some(4), "after the cool-down");
        d.changed(80.0);
        assert_eq!(d.decide(100.0, 4, Some(0.5)), None, "on target, cooling");
        // Load gone: down only once the window has no higher recommendation.
        assert_eq!(d.decide(145.0, 4, Some(0.0)), None, "45 s ago it said 4");
        assert_eq!(d.decide(170.0, 4, Some(0.0)), Some(1));
        d.changed(170.0);
        assert_eq!(d.decide(300.0, 1, Some(0.5)), None, "on target");
        assert_eq!(d.decide(310.0, 9, Some(0.5)), Some(5), "above max at once");
    }
}
