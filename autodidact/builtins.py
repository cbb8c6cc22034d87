"""The built-in registrations: strings only, so that importing this module imports nothing."""

from __future__ import annotations

from autodidact.registry import register


def register_all() -> None:
    """Register every built-in environment, suite, graph, model backend, store, sandbox, trainer and policy."""
    register("environment", "code", "environments.code.env:CodeEnvironment")
    register("environment", "web", "environments.web.env:WebEnvironment")
    register("environment", "browsergym", "environments.web.browsergym:BrowserGymEnvironment")

    register("suite", "bundled", "environments.tasks:bundled_suite")
    register("suite", "humaneval", "environments.tasks:humaneval_suite")
    register("suite", "humaneval_plus", "environments.code.evalplus:humaneval_plus_suite")
    register("suite", "mbpp_plus", "environments.code.evalplus:mbpp_plus_suite")
    register("suite", "miniwob", "environments.web.miniwob:miniwob_suite")
    register("suite", "browsergym-miniwob", "environments.web.browsergym:browsergym_suite", benchmark="miniwob")
    register("suite", "miniwob-seeds", "environments.web.miniwob:miniwob_seed_suite")
    register("suite", "shop", "environments.web.sites.shop:shop_suite")
    register("suite", "forum", "environments.web.sites.forum:forum_suite")

    register("site", "shop", "environments.web.sites.shop:ShopSite")
    register("site", "forum", "environments.web.sites.forum:ForumSite")

    register("role", "reviewer", "agents.roles.reviewer:Reviewer")
    register("role", "refiner", "agents.roles.refiner:Refiner")
    register("role", "world_model", "agents.roles.world_model:WorldModel")
    register("role", "judge", "agents.roles.judge:Judge")
    register("role", "reflector", "agents.roles.reflector:Reflector")
    register("role", "verifier", "agents.roles.verifier:Verifier")
    register("role", "outcome", "agents.roles.outcome:OutcomeJudge")
    register("role", "task_writer", "agents.roles.task_writer:TaskWriter")
    register("role", "feasibility", "agents.roles.task_writer:FeasibilityJudge")

    register("graph", "react", "agents.graphs.react:build_react_graph")
    register("graph", "reflexion", "agents.graphs.reflexion:build_reflexion_graph")
    register("graph", "mcts", "agents.graphs.mcts:build_mcts_graph")
    register("graph", "magicore", "agents.graphs.magicore:build_magicore_graph")
    register("graph", "lookahead", "agents.graphs.lookahead:build_lookahead_graph")
    register("graph", "imagine", "agents.graphs.imagine:build_imagine_graph")

    register("model", "transformers", "agents.llm.hf_local:TransformersChatModel")
    register("model", "openai", "agents.llm.openai_compat:OpenAIChatModel")
    register("model", "vllm", "agents.llm.vllm_engine:VLLMChatModel")

    register("store", "sqlite", "memory.sqlite:SQLiteTrajectoryStore")
    register("store", "postgres", "memory.postgres:PostgresTrajectoryStore")

    register("sandbox", "process", "environments.sandbox.process:ProcessSandbox")
    register("sandbox", "docker", "environments.sandbox.docker:DockerSandbox")

    register("trainer", "sft", "training.sft:train_sft")
    register("trainer", "dpo", "training.dpo:train_dpo")
    register("trainer", "webrl", "training.webrl:train_webrl")
    register("trainer", "score", "training.score:train_score")
    register("trainer", "prm", "training.prm:train_prm")
    register("trainer", "comas", "training.comas:train_comas")

    register("policy", "code:reference", "environments.code.policies:ReferencePolicy")
    register("policy", "code:mutant", "environments.code.policies:MutantPolicy")
    register("policy", "web:reference", "environments.web.policies:ReferencePolicy")
