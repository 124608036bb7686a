"""Encoder-benchmark metric kernels on hand-made feature / score matrices with hand-computed answers."""
import math

import pytest
import torch

from fgclip_lmm.eval.clip.metrics import (
    class_embeddings,
    fgovd_scores,
    recall_at,
    retrieval_ranks,
    topk_accuracy,
    topk_ranks,
)


def features_for(sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image features I (identity) and text features T with I @ T.T == sim (no normalisation involved)."""
    return torch.eye(sim.shape[0]), sim.T.clone()


def test_retrieval_recall_both_ways_with_five_captions_per_image():
    # 3 images x 5 captions; caption j belongs to image j // 5 (COCO-style layout).
    n_img, per = 3, 5
    t2i = torch.arange(n_img * per) // per
    sim = torch.full((n_img, n_img * per), 0.0)
    # Image 0: its best own caption (index 3, 0.9) is the top text -> I2T rank 0.
    sim[0, 3] = 0.9
    sim[0, 7] = 0.5
    # Image 1: two foreign captions (0.95, 0.9) beat its best own one (0.8) -> rank 2.
    sim[1, 0], sim[1, 14], sim[1, 6] = 0.95, 0.9, 0.8
    # Image 2: own captions all 0.1; 8 foreign captions at 0.5 and above -> rank 8 (hit at 10, miss at 5).
    sim[2, 10:15] = 0.1
    sim[2, 0:8] = torch.linspace(0.5, 0.9, 8)
    image_feats, text_feats = features_for(sim)
    i2t, t2i_r = retrieval_ranks(image_feats, text_feats, t2i, chunk=2)
    assert i2t.tolist() == [0, 2, 8]
    assert recall_at(i2t, (1, 5, 10)) == pytest.approx({"R@1": 100 / 3, "R@5": 200 / 3, "R@10": 100.0})
    # Text -> image, by hand for each column of sim: rank of the true image among 3.
    expected = []
    for j in range(n_img * per):
        col, gt = sim[:, j], int(t2i[j])
        beats = [(col[i] > col[gt]) or (col[i] == col[gt] and i < gt) for i in range(n_img)]
        expected.append(sum(bool(b) for b in beats))
    assert t2i_r.tolist() == expected
    # Caption 3 -> image 0 (0.9 vs 0, 0): rank 0; caption 0 of image 0 scores 0 there, 0.95 / 0.5 elsewhere: rank 2.
    assert t2i_r[3] == 0 and t2i_r[0] == 2
    # Captions 10..13 of image 2 score 0.1 there and 0 elsewhere -> rank 0; caption 14 scores 0.9 on image 1 -> 1.
    assert t2i_r[10:15].tolist() == [0, 0, 0, 0, 1]


def test_retrieval_ties_follow_argmax_order_and_chunking_is_invisible():
    torch.manual_seed(0)
    image_feats = torch.nn.functional.normalize(torch.randn(7, 4), dim=-1)
    text_feats = torch.cat([image_feats, image_feats[:3]])  # duplicate captions -> exact ties
    t2i = torch.tensor([0, 1, 2, 3, 4, 5, 6, 3, 4, 5])  # caption 7 duplicates caption 0's text, etc.
    full = retrieval_ranks(image_feats, text_feats, t2i, chunk=100)
    small = retrieval_ranks(image_feats, text_feats, t2i, chunk=1)
    assert all(torch.equal(a, b) for a, b in zip(full, small, strict=True))
    # Image 0: its own caption 0 and the foreign duplicate 7 tie; the lower index (own) wins -> rank 0.
    # Image 3: own captions 3 and 7; text 0 (foreign) ties with own text 7 but own caption 3 is exact -> rank 0.
    assert full[0][0] == 0
    # Caption 7 (text equal to image 0's feature, true image 3): image 0 ranks first -> rank >= 1.
    assert full[1][7] >= 1


def test_retrieval_rejects_an_image_without_captions():
    with pytest.raises(ValueError, match="image 1 has no caption"):
        retrieval_ranks(torch.eye(3), torch.eye(3)[:2], torch.tensor([0, 2]))


def test_fgovd_accuracy_with_fewer_than_ten_negatives_and_padding():
    texts = torch.eye(6)
    region = torch.nn.functional.normalize(torch.tensor([
        [1.0, 0.2, 0.0, 0.0, 0.0, 0.0],   # positive 0 wins over negatives 1, 2
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],   # positive 0 loses to negative 1
        [0.0, 0.0, 0.0, 0.5, 0.5, 0.0],   # positive 3 ties negative 4 -> argmax picks index 0 (the positive)
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],   # 2 negatives only; padding (-1) must not win even though score 0
    ]), dim=-1)
    index = torch.tensor([
        [0, 1, 2, -1, -1],
        [0, 1, 2, 3, 4],
        [3, 4, -1, -1, -1],
        [0, 1, 2, -1, -1],  # region only matches text 5, which is not among its texts: all scores 0 -> tie -> correct
    ])
    correct, p_pos = fgovd_scores(region, texts, index)
    assert correct.tolist() == [True, False, True, True]
    # Row 0: logits 100*[cos0, cos1, cos2] with cos0 = 1/sqrt(1.04), cos1 = 0.2/sqrt(1.04), cos2 = 0.
    c0, c1 = 1 / math.sqrt(1.04), 0.2 / math.sqrt(1.04)
    expected0 = 1 / (1 + math.exp(100 * (c1 - c0)) + math.exp(-100 * c0))
    assert p_pos[0].item() == pytest.approx(expected0, rel=1e-5)
    assert p_pos[2].item() == pytest.approx(0.5)  # two equal logits
    assert p_pos[3].item() == pytest.approx(1 / 3)  # three real texts, padding gets no mass


def test_fgovd_requires_the_positive_in_column_zero():
    with pytest.raises(ValueError, match="positive text in column 0"):
        fgovd_scores(torch.eye(2), torch.eye(2), torch.tensor([[0, 1], [-1, 0]]))


def test_template_averaging_normalises_each_prompt_then_the_mean():
    # 2 classes x 2 templates with very different norms: averaging raw vectors would let the long one dominate.
    prompts = torch.tensor([[10.0, 0.0, 0.0], [0.0, 1.0, 0.0],   # class 0
                            [0.0, 0.0, 3.0], [0.0, 4.0, 0.0]])   # class 1
    emb = class_embeddings(prompts, num_classes=2, num_templates=2)
    s = 1 / math.sqrt(2)
    assert torch.allclose(emb, torch.tensor([[s, s, 0.0], [0.0, s, s]]), atol=1e-6)
    with pytest.raises(ValueError, match="2 classes x 3 templates"):
        class_embeddings(prompts, 2, 3)


def test_box_classification_top1_top5_from_ranks():
    # 4 boxes over 6 classes; scores chosen so the true class ranks 0, 2, 5 and 4.
    scores = torch.tensor([
        [9.0, 1, 2, 3, 4, 5],
        [9.0, 8, 7, 6, 5, 4],   # label 2 -> rank 2
        [0.0, 1, 2, 3, 4, 5],   # label 0 -> rank 5
        [5.0, 5, 5, 5, 5, 1],   # label 4 ties with 0..3, lower indices rank first -> rank 4
    ])
    labels = torch.tensor([0, 2, 0, 4])
    ranks = topk_ranks(scores, labels)
    assert ranks.tolist() == [0, 2, 5, 4]
    assert topk_accuracy(ranks, (1, 5), num_classes=6) == {"top1": 25.0, "top5": 75.0}
    assert topk_accuracy(ranks, (1, 5), num_classes=3) == {"top1": 25.0}  # top-5 is meaningless with 3 classes
    assert math.isnan(recall_at(torch.zeros(0, dtype=torch.long), (1,))["R@1"])
