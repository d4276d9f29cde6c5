"""Using coars_fast.kernels inside your own RL loop (runs on CPU in a few seconds).

A toy policy learns to name a "ground-truth item" (token TARGET) in its answer. Each step:
  1. sample answers from the policy (your rollout code);
  2. score them (your reward);
  3. take the final hidden states of the student prompt and of a teacher prompt that also shows the
     hindsight hint, at the positions that predict each answer token (shift applied);
  4. teacher_student_logprobs for the rollout's old log-probs / monitoring (no graph), and
     coars_loss for the update, which never builds [tokens x vocab] logits.

With a Hugging Face model the same two tensors are
    hidden = model(input_ids, output_hidden_states=True).hidden_states[-1][batch_row, positions_predicting_answer]
    weight = model.lm_head.weight   (or model.get_output_embeddings().weight)
(hidden_states[-1] is [batch, seq, D]: index the batch row, then the positions; docs/KERNELS.md)
"""

import argparse

import torch

from coars_fast.kernels import active_backend, coars_loss, teacher_student_logprobs

VOCAB, DIM, PROMPT_LEN, ANSWER_LEN, TARGET, HINT = 64, 32, 6, 4, 7, 63


class ToyPolicy(torch.nn.Module):
    """Embedding -> GRU -> LM head: enough to show where hidden states and the head come from."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, DIM)
        self.body = torch.nn.GRU(DIM, DIM, batch_first=True)
        self.lm_head = torch.nn.Linear(DIM, VOCAB, bias=False)
        self.lm_head.weight.requires_grad_(False)  # frozen head, as with LoRA adapters

    def hidden_states(self, tokens):
        return self.body(self.embed(tokens))[0]  # [B, T, D]: the final hidden state at every position

    @torch.no_grad()
    def sample(self, prompts, length, gen):
        tokens = prompts
        for _ in range(length):
            logits = self.lm_head(self.hidden_states(tokens)[:, -1])
            next_token = torch.multinomial(logits.softmax(-1), 1, generator=gen)
            tokens = torch.cat([tokens, next_token], dim=1)
        return tokens[:, prompts.shape[1] :]


def answer_hidden(policy, prompts, answers):
    """Hidden states at the positions predicting each answer token, flattened to [B * A, D]."""
    tokens = torch.cat([prompts, answers], dim=1)
    hidden = policy.hidden_states(tokens)[:, prompts.shape[1] - 1 : -1]  # position t predicts token t + 1
    return hidden.reshape(-1, DIM)


def main(steps=60, batch=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy = ToyPolicy()
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    print(f"coars_fast.kernels backend on cpu: {active_backend('cpu')}")
    curve = []

    for step in range(steps):
        prompts = torch.randint(0, VOCAB - 1, (batch, PROMPT_LEN), generator=gen)
        answers = policy.sample(prompts, ANSWER_LEN, gen)
        hits = (answers == TARGET).any(dim=1).float()
        curve.append(hits.mean().item())
        rewards = (2 * hits - 1).repeat_interleave(ANSWER_LEN)  # one scalar per answer, broadcast to its tokens
        token_weights = torch.full_like(rewards, 1.0 / (ANSWER_LEN * batch))
        targets = answers.reshape(-1)
        # The teacher sees the hindsight hint: "the right answer is TARGET".
        teacher_prompts = torch.cat([prompts, torch.tensor([[HINT, TARGET]]).expand(batch, 2)], dim=1)

        with torch.no_grad():  # rollout-time log-probs, e.g. for PPO's ratio or for logging
            old_student, old_teacher = teacher_student_logprobs(
                answer_hidden(policy, prompts, answers),
                answer_hidden(policy, teacher_prompts, answers),
                policy.lm_head.weight,
                targets,
            )

        student_hidden = answer_hidden(policy, prompts, answers)
        with torch.no_grad():
            teacher_hidden = answer_hidden(policy, teacher_prompts, answers)
        loss, stats = coars_loss(
            student_hidden,
            teacher_hidden,
            policy.lm_head.weight,
            targets,
            rewards,
            token_weights,
            distill_coef=0.1,
            credit_clip=1.0,
            old_logprobs=old_student,
            ppo_clip=0.2,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            print(
                f"step {step:3d}  hit rate {hits.mean().item():.2f}  loss {loss.item():+.4f}  "
                f"mean credit {stats['credit'].mean().item():+.3f}  "
                f"teacher-student gap {(old_teacher - old_student).mean().item():+.3f}"
            )
    window = max(1, steps // 6)
    first, last = sum(curve[:window]) / window, sum(curve[-window:]) / window
    print(f"hit rate over the first {window} steps {first:.2f}, over the last {window} steps {last:.2f} (seed {seed})")
    return first, last


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    main(args.steps, args.batch)
