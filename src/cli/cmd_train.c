/* basrec train: plain or two-stage BASRec training of one run. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "eval/evaluate.h"
#include "models/model.h"
#include "train/checkpoint.h"
#include "train/train.h"

int cmd_train(int argc, char **argv) {
    br_model_config mc;
    br_train_config tc;
    br_model_config_defaults(&mc);
    br_train_config_defaults(&tc);
    const char *data = NULL, *out = NULL, *model = "sasrec", *metrics_log = NULL,
               *preset_name = NULL, *method = "plain", *init_from = NULL,
               *operators = "reorder,substitute", *crop_align = "suffix", *loss = "bce",
               *ce_sampler = "pop", *mix_pad = "zero",
               *weight_form = NULL;
    int32_t threads = 0, stage1_epochs = 200;
    float dropout = -1.0f;
    int resume = 0, no_progress = 0, joint = 0, no_ssa = 0, no_csa = 0, no_weight = 0,
        linear = 0, help;
    br_basrec_config *bc = &tc.basrec;
    opt_spec specs[] = {
        {"data", OPT_STR, &data, "sequence file: one line per user, 'user item item ...'", 0},
        {"out", OPT_STR, &out, "run directory for checkpoints and results (default runs/<data name>)", 0},
        {"preset", OPT_STR, &preset_name, "dataset preset: beauty, sports, yelp, home", 0},
        {"model", OPT_STR, &model, "backbone: sasrec, gru4rec, nextitnet, fmlprec", 0},
        {"method", OPT_STR, &method, "plain, or basrec (two stages: plain, then augmented)", 0},
        {"hidden-size", OPT_INT, &mc.dim, "hidden size", 0},
        {"num-hidden-layers", OPT_INT, &mc.n_layers, "encoder layers", 0},
        {"num-attention-heads", OPT_INT, &mc.n_heads, "attention heads", 0},
        {"hidden-dropout-prob", OPT_FLOAT, &mc.hidden_dropout, "hidden dropout", 0},
        {"attention-probs-dropout-prob", OPT_FLOAT, &mc.attn_dropout, "attention dropout", 0},
        {"dropout", OPT_FLOAT, &dropout, "set both dropouts (default: unset)", 0},
        {"initializer-range", OPT_FLOAT, &mc.init_std, "std of the normal weight init", 0},
        {"max-seq-length", OPT_INT, &mc.max_len, "keep the last N items of each sequence", 0},
        {"run-padding", OPT_FLAG, &mc.run_padding, "gru4rec: run the GRU over the left padding first, as the reference (start state learned per length)", 0},
        {"lr", OPT_FLOAT, &tc.lr, "Adam learning rate (a preset's plain sasrec: 0.0003)", 0},
        {"weight-decay", OPT_FLOAT, &tc.weight_decay, "Adam L2 weight decay", 0},
        {"batch-size", OPT_INT, &tc.batch_size, "users per batch", 0},
        {"epochs", OPT_INT, &tc.epochs, "maximum epochs (presets: 200, yelp/home 100; a preset's plain sasrec: 400, gru4rec: 600; fmlprec's stage 2: 300)", 0},
        {"patience", OPT_INT, &tc.patience, "stop after N validations without improvement (a preset's plain gru4rec: 40)", 0},
        {"start-valid", OPT_INT, &tc.start_valid, "first validated epoch (presets: 100, yelp/home 50; basrec without preset: 100; softmax losses: 0)", 0},
        {"seed", OPT_U64, &tc.seed, "random seed", 0},
        {"stage1-epochs", OPT_INT, &stage1_epochs, "basrec: maximum epochs of stage 1", 0},
        {"init-from", OPT_STR, &init_from, "basrec: start stage 2 from this checkpoint (skips stage 1)", 0},
        {"beta", OPT_FLOAT, &bc->alpha, "basrec: mixup weights ~ Beta(beta, beta) (the paper's alpha)", 0},
        {"rate-min", OPT_FLOAT, &bc->rate_min, "basrec: operator rate ~ U(rate-min, rate-max)", 0},
        {"rate-max", OPT_FLOAT, &bc->rate_max, "basrec: see rate-min", 0},
        {"n-pairs", OPT_INT, &bc->n_pairs, "basrec: pairs of augmented copies per sequence", 0},
        {"n-whole-level", OPT_INT, &bc->n_whole_level, "basrec: item-wise and feature-wise mixes, each", 0},
        {"no-single-seq", OPT_FLAG, &no_ssa, "basrec ablation: without single-sequence augmentation", 0},
        {"no-cross-seq", OPT_FLAG, &no_csa, "basrec ablation: without cross-sequence augmentation", 0},
        {"no-adaptive-weight", OPT_FLAG, &no_weight, "basrec ablation: constant loss weights", 0},
        {"linear-mixup", OPT_FLAG, &linear, "basrec ablation: one mixup weight per sequence", 0},
        {"joint", OPT_FLAG, &joint, "basrec ablation: one stage, augmented from scratch", 0},
        {"operators", OPT_STR, &operators, "basrec: copies' operators, drawn uniformly: any of reorder,substitute,crop,mask", 0},
        {"mix-pad", OPT_STR, &mix_pad, "basrec: a shorter partner's side of a cross-sequence mix: zero, its last output (last), or its padded-slot output as the reference computes it (encode; sasrec)", 0},
        {"weight-form", OPT_STR, &weight_form, "basrec: how adaptive weights enter a copy's loss: per sequence (sequence), or their batch sum scaling the copy's mean loss, as the reference code computes (batch)", 0},
        {"crop-align", OPT_STR, &crop_align, "basrec: a crop copy keeps the window's tokens only (suffix) or all (pad)", 0},
        {"loss", OPT_STR, &loss, "bce, ce (full softmax at every position), last-ce, focal, or sampled-ce (softmax over the target and sampled negatives, logQ-corrected); basrec's stage 1 uses it too", 0},
        {"focal-gamma", OPT_FLOAT, &tc.loss.focal_gamma, "focal loss exponent", 0},
        {"ce-negatives", OPT_INT, &tc.loss.ce_negatives, "sampled-ce: negatives drawn per step, shared by its tokens", 0},
        {"ce-sampler", OPT_STR, &ce_sampler, "sampled-ce: negatives' distribution: pop (training-target counts + 1) or uniform", 0},
        {"threads", OPT_INT, &threads, "threads (default: all cores)", 0},
        {"metrics-log", OPT_STR, &metrics_log, "append per-epoch metrics as JSON lines to this file", 0},
        {"resume", OPT_FLAG, &resume, "continue the run in --out where it stopped, with this command's --epochs and --patience", 0},
        {"no-progress", OPT_FLAG, &no_progress, "no progress output on stderr", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("train", &err);
    if (help) {
        args_print_help("usage: basrec train --data FILE [options]\n\n"
                        "Trains a model with validation each epoch, keeps the best checkpoint by\n"
                        "valid NDCG@20, stops early, and reports test metrics of the best one.\n"
                        "Writes OUT/best.safetensors, OUT/last.safetensors (resumable), OUT/result.json;\n"
                        "with --method basrec, stage 1 goes to OUT/stage1 and stage 2 to OUT.",
                        specs);
        return 0;
    }
    if (!data) {
        fprintf(stderr, "basrec train: --data is required (see --help)\n");
        return 2;
    }
    const int basrec = strcmp(method, "basrec") == 0;
    if (!basrec && strcmp(method, "plain") != 0) {
        fprintf(stderr, "basrec train: unknown method '%s' (plain, basrec)\n", method);
        return 2;
    }
    const cli_preset *preset = NULL;
    if (preset_name) {
        const cli_preset *p = preset = cli_find_preset(preset_name);
        if (!p) {
            fprintf(stderr, "basrec train: unknown preset '%s' (beauty, sports, yelp, home)\n", preset_name);
            return 2;
        }
        if (!args_find(specs, "hidden-dropout-prob")->seen) mc.hidden_dropout = cli_preset_dropout(p, model);
        if (!args_find(specs, "attention-probs-dropout-prob")->seen) mc.attn_dropout = cli_preset_dropout(p, model);
        if (basrec) {
            br_basrec_config explicit_cfg = *bc;
            br_basrec_preset(bc, p->name);
            /* Options given on the command line win over the preset. */
            if (args_find(specs, "beta")->seen) bc->alpha = explicit_cfg.alpha;
            if (args_find(specs, "rate-min")->seen) bc->rate_min = explicit_cfg.rate_min;
            if (args_find(specs, "rate-max")->seen) bc->rate_max = explicit_cfg.rate_max;
            if (args_find(specs, "n-pairs")->seen) bc->n_pairs = explicit_cfg.n_pairs;
            if (args_find(specs, "n-whole-level")->seen) bc->n_whole_level = explicit_cfg.n_whole_level;
        }
        if (!args_find(specs, "epochs")->seen) tc.epochs = basrec ? cli_preset_stage2_epochs(p, model) : p->epochs;
        if (!args_find(specs, "stage1-epochs")->seen) stage1_epochs = p->epochs;
        if (!args_find(specs, "start-valid")->seen) tc.start_valid = p->start_valid;
    } else if (basrec && !args_find(specs, "start-valid")->seen) {
        tc.start_valid = 100;
    }
    if (br_basrec_parse_operators(operators, &bc->operators) < 0) {
        fprintf(stderr, "basrec train: --operators wants a non-empty list of reorder, substitute, crop, mask\n");
        return 2;
    }
    if (br_mix_pad_parse(mix_pad, &bc->mix_pad) < 0) {
        fprintf(stderr, "basrec train: unknown --mix-pad '%s' (zero, last, encode)\n", mix_pad);
        return 2;
    }
    if (weight_form && br_weight_form_parse(weight_form, &bc->weight_form) < 0) {
        fprintf(stderr, "basrec train: unknown --weight-form '%s' (sequence, batch)\n", weight_form);
        return 2;
    }
    if (br_crop_align_parse(crop_align, &bc->crop_align) < 0) {
        fprintf(stderr, "basrec train: unknown --crop-align '%s' (suffix, pad)\n", crop_align);
        return 2;
    }
    if (br_loss_parse(loss, &tc.loss.kind) < 0) {
        fprintf(stderr, "basrec train: unknown loss '%s' (bce, ce, last-ce, focal, sampled-ce)\n", loss);
        return 2;
    }
    /* Softmax losses peak within a few dozen epochs; BCE's schedule would
     * overfit for a hundred before the first validation. */
    if (br_loss_is_softmax(tc.loss.kind) && !args_find(specs, "start-valid")->seen) tc.start_valid = 0;
    if (br_sampler_parse(ce_sampler, &tc.loss.ce_sampler) < 0) {
        fprintf(stderr, "basrec train: unknown --ce-sampler '%s' (pop, uniform)\n", ce_sampler);
        return 2;
    }
    if (tc.loss.ce_negatives < 1) {
        fprintf(stderr, "basrec train: --ce-negatives must be at least 1\n");
        return 2;
    }
    if (dropout >= 0.0f) mc.hidden_dropout = mc.attn_dropout = dropout;
    if (strlen(model) >= sizeof mc.model) {
        fprintf(stderr, "basrec train: unknown model '%s'\n", model);
        return 2;
    }
    strcpy(mc.model, model);
    /* The backbone's own depth unless --num-hidden-layers was given. */
    if (!args_find(specs, "num-hidden-layers")->seen) br_model_config_backbone_defaults(&mc);
    /* Checked before stage 1 rather than after it, where stage 2 would fail. */
    if (basrec && bc->mix_pad == BR_MIX_PAD_ENCODE) {
        br_error berr;
        br_backbone *bb = br_backbone_create(&mc, &berr);
        if (!bb) {
            fprintf(stderr, "basrec train: %s\n", berr.msg);
            return 2;
        }
        const int encodes = bb->vt->encodes_padding;
        bb->vt->destroy(bb);
        if (!encodes) {
            fprintf(stderr, "basrec train: --mix-pad encode needs a backbone that encodes padded slots (sasrec), not '%s'\n",
                    model);
            return 2;
        }
    }
    bc->single_seq = !no_ssa;
    bc->cross_seq = !no_csa;
    bc->adaptive_weight = !no_weight;
    bc->nonlinear = !linear;
    cli_set_threads(threads);

    /* Plain runs and stage 1 follow the preset's plain recipe where no
     * option says otherwise (BCE; the softmax losses keep the preset's
     * dropout, with which their results were measured); stage 2 keeps the
     * preset's dropout. */
    br_model_config mc1 = mc;
    br_train_config t1 = tc;
    t1.use_basrec = 0;
    t1.epochs = basrec ? stage1_epochs : tc.epochs;
    if (!preset_name) t1.start_valid = basrec ? 0 : tc.start_valid;
    if (preset && !br_loss_is_softmax(tc.loss.kind)) {
        br_model_config rm = mc;
        br_train_config rt = tc;
        cli_preset_plain(preset, model, &rm, &rt);
        const int dropout_seen = dropout >= 0.0f || args_find(specs, "hidden-dropout-prob")->seen ||
                                 args_find(specs, "attention-probs-dropout-prob")->seen;
        if (!dropout_seen) mc1.hidden_dropout = rm.hidden_dropout, mc1.attn_dropout = rm.attn_dropout;
        if (!args_find(specs, "start-valid")->seen) t1.start_valid = rt.start_valid;
        if (!args_find(specs, basrec ? "stage1-epochs" : "epochs")->seen) t1.epochs = rt.epochs;
        if (!args_find(specs, "patience")->seen) t1.patience = rt.patience;
        if (!args_find(specs, "lr")->seen) t1.lr = rt.lr;
    }

    char out_buf[4096], stage1_dir[4200], stage1_best[4300];
    if (!out) {
        const char *base = strrchr(data, '/');
        base = base ? base + 1 : data;
        snprintf(out_buf, sizeof out_buf, "runs/%.*s", (int)strcspn(base, "."), base);
        out = out_buf;
    }
    br_dataset ds;
    if (br_dataset_load(data, &ds, &err) < 0) return cli_fail("train", &err);
    FILE *log = NULL;
    if (metrics_log && !(log = fopen(metrics_log, "a"))) {
        fprintf(stderr, "basrec train: cannot open %s: %s\n", metrics_log, strerror(errno));
        br_dataset_free(&ds);
        return 1;
    }
    const int progress = !no_progress && isatty(2) ? BR_PROGRESS_BAR : BR_PROGRESS_QUIET;
    br_train_result res;
    int rc = 0;
    if (basrec && !joint && !init_from && !(resume && cli_file_exists(out, "last.safetensors"))) {
        /* Stage 1: plain training, reused when it already finished. */
        snprintf(stage1_dir, sizeof stage1_dir, "%s/stage1", out);
        snprintf(stage1_best, sizeof stage1_best, "%s/best.safetensors", stage1_dir);
        if (!cli_file_exists(stage1_dir, "result.json")) {
            /* Stage 1 trains the backbone alone with stage 2's main loss. */
            if (progress) fprintf(stderr, "stage 1: plain training into %s\n", stage1_dir);
            rc = cli_run_stage(&ds, &mc1, &t1, stage1_dir, NULL,
                           resume && cli_file_exists(stage1_dir, "last.safetensors"), log, progress, &res, &err);
        }
        init_from = stage1_best;
        resume = 0;
        if (progress && rc == 0) fprintf(stderr, "stage 2: BASRec training into %s\n", out);
    }
    tc.use_basrec = basrec;
    const int plain = !basrec;
    if (rc == 0)
        rc = cli_run_stage(&ds, plain ? &mc1 : &mc, plain ? &t1 : &tc, out, init_from, resume, log,
                           progress, &res, &err);
    if (log) fclose(log);
    br_dataset_free(&ds);
    if (rc < 0) return cli_fail("train", &err);
    cli_print_result(stdout, &res);
    return 0;
}

