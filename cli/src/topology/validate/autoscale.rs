//! A scale set's autoscale rule.

use marked_yaml::Spanned;

use super::compute::MAX_REPLICAS;
use super::Ctx;
use crate::topology::desired::Autoscale;
use crate::topology::schema::AutoscaleSpecY;

/// Checks an autoscale rule: 1 ≤ min ≤ replicas ≤ max ≤ the largest set,
/// a target of 1–100 %, a cool-down of at most an hour.
pub(super) fn check(
    ctx: &mut Ctx,
    a: &Spanned<AutoscaleSpecY>,
    replicas: u32,
    path: &str,
) -> Option<Autoscale> {
    let before = ctx.errors.len();
    let (min, max) = (*a.min_replicas, *a.max_replicas);
    if !(1..=MAX_REPLICAS).contains(&min) {
        ctx.err(
            a.min_replicas.span(),
            format!("{path}.autoscale.min_replicas"),
            format!("{min}: must be 1 to {MAX_REPLICAS}"),
        );
    }
    if max < min || max > MAX_REPLICAS {
        ctx.err(
            a.max_replicas.span(),
            format!("{path}.autoscale.max_replicas"),
            format!("{max}: must be min_replicas ({min}) to {MAX_REPLICAS}"),
        );
    }
    if ctx.errors.len() == before && !(min..=max).contains(&replicas) {
        ctx.err(
            a.span(),
            format!("{path}.replicas"),
            format!("{replicas} is outside the autoscale range {min} to {max}"),
        );
    }
    let target = a.target_cpu_percent.as_ref().map_or(60, |t| **t);
    if !(1..=100).contains(&target) {
        let span = a
            .target_cpu_percent
            .as_ref()
            .map_or(*a.span(), |t| *t.span());
        ctx.err(
            &span,
            format!("{path}.autoscale.target_cpu_percent"),
            format!("{target}: must be 1 to 100"),
        );
    }
    let cooldown = a.cooldown_seconds.as_ref().map_or(120, |c| **c);
    if cooldown > 3600 {
        let span = a.cooldown_seconds.as_ref().map_or(*a.span(), |c| *c.span());
        ctx.err(
            &span,
            format!("{path}.autoscale.cooldown_seconds"),
            format!("{cooldown}: at most 3600"),
        );
    }
    (ctx.errors.len() == before).then_some(Autoscale {
        min_replicas: min,
        max_replicas: max,
        target_cpu_percent: target,
        cooldown_seconds: cooldown,
    })
}
