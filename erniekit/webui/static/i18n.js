// The page's words in English and Chinese. Field docs come from the recipe schema (English).
"use strict";
const WORDS = {
  en: {
    "tab.train": "Train", "tab.chat": "Chat", "tab.eval": "Eval", "tab.export": "Export",
    "train.recipe": "Recipe", "train.nproc": "Processes", "train.start": "Start training", "train.plan": "Plan",
    "train.runs": "Runs", "train.shipped": "Shipped recipes", "train.local": "Your recipe files",
    "runs.dir": "Run", "runs.status": "Status", "runs.step": "Step", "runs.ckpts": "Checkpoints",
    "run.stop": "Stop (save and exit)", "run.resume": "Resume", "run.checkpoints": "Checkpoints", "run.log": "Log",
    "run.chat": "Chat", "run.export": "Export", "run.nolog": "(started from the command line: its output went there)",
    "status.starting": "starting", "status.running": "running", "status.stopping": "stopping",
    "status.finished": "finished", "status.stopped": "stopped", "status.failed": "failed",
    "status.lost": "lost", "status.cli": "from the CLI",
    "chat.model": "Model", "chat.adapter": "LoRA adapter (unmerged, optional)", "chat.load": "Load",
    "chat.sampling": "Sampling", "chat.temperature": "Temperature (0 = greedy)", "chat.max_tokens": "Max new tokens",
    "chat.system": "System prompt", "chat.image": "Image", "chat.placeholder": "Type a message",
    "chat.send": "Send", "chat.clear": "Clear", "chat.none": "(none)", "chat.loading": "loading…",
    "chat.loaded": "loaded", "chat.notloaded": "no model loaded",
    "eval.title": "Evaluate", "eval.target": "Model, run or recipe",
    "eval.data": "Loss/perplexity data (SFT files, comma-separated)",
    "eval.generation": "Generation data ({prompt, answer} files, comma-separated)",
    "eval.overrides": "Overrides (KEY=VALUE, one per line)", "eval.start": "Run eval",
    "export.title": "Export", "export.run": "Run or checkpoint", "export.to": "Format", "export.dtype": "Weights",
    "export.merge": "Merge LoRA into the weights", "export.out": "Output directory", "export.start": "Export",
    "job.files": "Files written", "job.scores": "Scores", "job.samples": "Sample completions",
    "form.changed": "changed", "train.filter": "Find a field (e.g. lr, max_steps)",
  },
  zh: {
    "tab.train": "训练", "tab.chat": "对话", "tab.eval": "评估", "tab.export": "导出",
    "train.recipe": "配方", "train.nproc": "进程数", "train.start": "开始训练", "train.plan": "资源估算",
    "train.runs": "训练记录", "train.shipped": "内置配方", "train.local": "你的配方文件",
    "runs.dir": "运行", "runs.status": "状态", "runs.step": "步数", "runs.ckpts": "检查点",
    "run.stop": "停止（保存后退出）", "run.resume": "继续训练", "run.checkpoints": "检查点", "run.log": "日志",
    "run.chat": "对话", "run.export": "导出", "run.nolog": "（从命令行启动：输出在那里）",
    "status.starting": "启动中", "status.running": "运行中", "status.stopping": "停止中",
    "status.finished": "已完成", "status.stopped": "已停止", "status.failed": "失败",
    "status.lost": "已丢失", "status.cli": "命令行启动",
    "chat.model": "模型", "chat.adapter": "LoRA 适配器（不合并，可选）", "chat.load": "加载",
    "chat.sampling": "采样", "chat.temperature": "温度（0 为贪心）", "chat.max_tokens": "最大生成长度",
    "chat.system": "系统提示词", "chat.image": "图片", "chat.placeholder": "输入消息",
    "chat.send": "发送", "chat.clear": "清空", "chat.none": "（无）", "chat.loading": "加载中…",
    "chat.loaded": "已加载", "chat.notloaded": "未加载模型",
    "eval.title": "评估", "eval.target": "模型、运行或配方",
    "eval.data": "损失/困惑度数据（SFT 文件，逗号分隔）",
    "eval.generation": "生成评测数据（{prompt, answer} 文件，逗号分隔）",
    "eval.overrides": "覆盖项（KEY=VALUE，每行一个）", "eval.start": "开始评估",
    "export.title": "导出", "export.run": "运行或检查点", "export.to": "格式", "export.dtype": "权重精度",
    "export.merge": "将 LoRA 合并进权重", "export.out": "输出目录", "export.start": "导出",
    "job.files": "写出的文件", "job.scores": "分数", "job.samples": "生成样例",
    "form.changed": "已修改", "train.filter": "查找字段（如 lr、max_steps）",
  },
};
let LANG = (localStorage.getItem("erniekit.lang") || (navigator.language || "en")).startsWith("zh") ? "zh" : "en";
function t(key) { return (WORDS[LANG] && WORDS[LANG][key]) || WORDS.en[key] || key; }
function applyLanguage() {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}
