/* table_config.c — a CreateTable's TableConfig as an ember_table_config (table_config.h). */
#include "server/table_config.h"

int srv_table_config_from_proto(const Ember__V1__TableConfig *p, ember_table_config *c,
                                ember_error *err)
{
    ember_table_config_init(c);
    if (!p)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "no config given (dim and capacity are required)");
    c->dim = p->dim;
    c->capacity = p->capacity;
    c->score_policy = (ember_score_policy)p->score_policy;
    c->seed = p->seed;
    if (p->optimizer) {
        const Ember__V1__OptimizerConfig *o = p->optimizer;
        c->optim.kind = (ember_optim_kind)o->kind;
#define OVR(f) if (o->f != 0.0f) c->optim.f = o->f
        OVR(lr);
        OVR(eps);
        OVR(initial_accumulator);
        OVR(beta1);
        OVR(beta2);
        OVR(weight_decay);
        OVR(l1);
        OVR(l2);
        OVR(lr_power);
        OVR(beta);
#undef OVR
    }
    if (p->initializer) {
        const Ember__V1__InitializerConfig *i = p->initializer;
        c->init.kind = (ember_init_kind)i->kind;
        c->init.a = i->a;
        c->init.b = i->b;
        if (i->a == 0.0f && i->b == 0.0f) {
            if (i->kind == EMBER__V1__INITIALIZER__INIT_UNIFORM) {
                c->init.a = -0.01f;
                c->init.b = 0.01f;
            } else if (i->kind == EMBER__V1__INITIALIZER__INIT_NORMAL ||
                       i->kind == EMBER__V1__INITIALIZER__INIT_TRUNCATED_NORMAL) {
                c->init.b = 0.01f;
            }
        }
    }
    c->admission.min_count = p->admission_min_count;
    c->admission.sketch_width = p->admission_sketch_width;
    c->nonfinite = p->zero_nonfinite ? EMBER_NONFINITE_ZERO : EMBER_NONFINITE_REJECT;
    c->max_capacity = p->max_capacity;
    c->max_load_factor = p->max_load_factor;
    c->ttl_seconds = p->ttl_seconds;
    return ember_table_config_validate(c, err);
}
