"""One folder per registered method, and the registry table: one line per method.

Each line says where the method lives; nothing here imports it (see tenfold/registry.py). Adding a
method adds one line.
"""

from tenfold.registry import MethodLocation as M

METHODS: dict[str, M] = {
    "rdnet": M("lightning_modules.rdnet.module",
               "DenseNets Reloaded (arXiv 2403.19588): timm RDNet-T/S/B/L, ImageNet-1K recipe",
               predictor="lightning_modules.classification.predict:predict"),
    "asr": M("lightning_modules.asr.module",
             "Attention-alike structural re-parameterization (arXiv 2304.06345): CIFAR ResNet164 + SE/ASR",
             predictor="lightning_modules.classification.predict:predict"),
    "deeplens": M("lightning_modules.deeplens.module",
                  "Curriculum ab-initio lens design (arXiv 2302.01089): differentiable ray tracing",
                  predictor="lightning_modules.deeplens.predict:predict"),
    "deeplens_edof": M("lightning_modules.deeplens_edof.module",
                       "DeepLens EDoF (arXiv 2302.01089): lens + NAFNet restoration trained end to end",
                       predictor="lightning_modules.deeplens_edof.predict:predict"),
    "face_emotion": M("lightning_modules.face_emotion.module",
                      "Face of Populism (arXiv 2304.09914): per-frame emotion scores of videos (fer's model)",
                      extra="face", predictor="lightning_modules.face_emotion.predict:predict"),
    "face_emotion_analysis": M("lightning_modules.face_emotion_analysis.job",
                               "Face of Populism (arXiv 2304.09914): the paper's statistics over per-frame scores"),
    "loraprune": M("lightning_modules.loraprune.module",
                   "LoRAPrune (arXiv 2305.18403): LoRA-gradient structured pruning of LLaMA-layout LMs",
                   extra="llm", predictor="lightning_modules.loraprune.predict:predict"),
    "loraprune_vit": M("lightning_modules.loraprune_vit.module",
                       "LoRAPrune (arXiv 2305.18403) on a timm ViT: heads and MLP channels",
                       extra="llm", predictor="lightning_modules.classification.predict:predict"),
    "critical_distill": M("lightning_modules.critical_distill.module",
                          "Distill Gold from Massive Ores (arXiv 2305.18381): critical real samples + DM/DC/DSA/MTT"),
    "critical_scores": M("lightning_modules.critical_distill.jobs",
                         "Distill Gold from Massive Ores: LossInit/LossConverge/MonteCarlo utility scores (job)"),
    "critical_scores_import": M("lightning_modules.critical_distill.jobs",
                                "Distill Gold from Massive Ores: import the authors' released score files (job)"),
    "anomaly_aug": M("lightning_modules.anomaly_aug.module",
                     "Comprehensive anomaly augmentation on DRAEM (arXiv 2308.15068): split training, MVTec AD",
                     extra="anomaly"),
    "gan_fingerprint": M("lightning_modules.gan_fingerprint.module",
                         "Fingerprinting GANs (arXiv 2106.11760): CFP-AE/iBDv1/v2 on C o G, commitment, verification"),
    "gan_fingerprint_gan": M("lightning_modules.gan_fingerprint.module",
                             "Fingerprinting GANs (arXiv 2106.11760): the DCGAN the fingerprints protect"),
    "mpvr": M("lightning_modules.mpvr.module",
              "MPVR (arXiv 2403.11755): zero-shot CLIP with LLM meta-prompted descriptions (S-/DS-TEMP baselines)",
              extra="mpvr"),
    "mpvr_queries": M("lightning_modules.mpvr.jobs", "MPVR stage 1: meta-prompt an LLM for query templates",
                      extra="mpvr"),
    "mpvr_descriptions": M("lightning_modules.mpvr.jobs", "MPVR stage 2: per-class LLM descriptions -> a bank",
                           extra="mpvr"),
}
