"""Request classification for routing: task type, difficulty tier, size, needs.

:func:`classify` reads a :class:`~clawrouter.wire.ChatCompletionRequest` and
guesses what kind of work it asks for (one of :data:`TASK_TYPES`), the cheapest
class of model that would do it well (``eco`` / ``auto`` / ``premium``), a
complexity in [0, 1], a prompt token estimate, the request's hard needs (tools,
images, long context) and the language of the last user message.

It runs on every routed request, so its cost is bounded by construction:

* **Bounded sample.** Only fixed windows of text are read: the head of the first
  system message (:data:`SYSTEM_HEAD` characters) and the head and tail of the
  last user message (:data:`USER_HEAD` + :data:`USER_TAIL` characters). Of every
  other message only the length is read (``len`` is O(1)), so a 2 MB prompt
  costs what a 1 KB one does.
* **Words from the instruction zone.** Keywords are looked up in the first 160
  and last 120 characters of the user message (where a request is phrased; the
  middle of a paste is material) and in the system head: one UTF-8 encode, one
  ``bytes.lower``/``translate``/``split``, one intersection with a precompiled
  keyword set. Each keyword's weights (per task, software-domain nouns,
  complexity up/down, per language) are packed into one integer, so all hits
  add up in a single ``sum``; ``struct`` unpacks the fields.
* **Symbols from byte counts.** The user sample is reduced with one
  ``bytes.translate`` to its marks (punctuation classes, digits, line breaks),
  a short string on which ``bytes.count`` gives code braces, operators,
  equations, questions, fences; the few context patterns (``name(`` calls,
  indented lines, separate numbers) are counted in the first 200 bytes, and
  only when they can occur.
* **Deterministic.** Integer weights and a fixed tie-break order: the same
  request always gives the same result, whatever the hash seed.

The token estimate is character-based and deliberately generous: the sample's
words and punctuation give the characters per token (at most 3.2 for Latin
prose, where real tokenizers get ~4; fewer for symbol-dense text; 1 for CJK),
applied to every message's length, plus images, files and tool definitions, so
context-window checks err on the safe side.

Limits: the classifier sees keywords and surface forms, not meaning. An
instruction in the middle of a long paste, a task named only by vocabulary it
does not list, software vocabulary in material that is to be extracted from
(server logs), or a language without keywords here (Korean, for one: it falls
back on symbols and on ``chat``) can be misread. Languages: es, fr, de, pt, it,
nl by function words (English otherwise) and ru/uk, zh, ja, ko, ar, he, el, hi,
th by script.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

from msgspec import UNSET

from .catalogue import TASK_TYPES  # one definition, shared with the catalogue
from .wire import ChatCompletionRequest, ChatMessage, ContentPart

__all__ = [
    "LONG_CONTEXT_TOKENS",
    "SYSTEM_HEAD",
    "TASK_TYPES",
    "TIERS",
    "USER_HEAD",
    "USER_TAIL",
    "Classification",
    "classify",
]

TIERS: Final = ("eco", "auto", "premium")

#: characters of the first system message that are examined
SYSTEM_HEAD: Final = 240
#: the instruction zone, whose words are read: this many characters at the start and
#: at the end of the last user message (the middle of a long paste is material)
_ZONE_HEAD = 160
_ZONE_TAIL = 120
#: characters from the start and from the end of the last user message that are examined
USER_HEAD: Final = 240
USER_TAIL: Final = 120
#: prompts estimated above this many tokens are ``long_context``
LONG_CONTEXT_TOKENS: Final = 32_000

#: characters per token for plain Latin-script prose (real tokenizers: ~4); lower
#: for symbol-dense text and other scripts, measured on the sample
_MAX_CPT = 3.2
#: per-message overhead of the chat format, in tokens
_PER_MESSAGE = 4
#: per image part: generous (a large high-detail image costs ~1,100-1,600 tokens upstream)
_IMAGE_TOKENS = 1_600
#: audio or file part without a measurable payload
_OTHER_PART_TOKENS = 1_000
#: per tool call in the history (id, name, framing), besides its arguments, in characters
_TOOL_CALL_CHARS = 64
#: per tool definition, plus its name/description length and a share per parameter
_TOOL_TOKENS = 24
_TOOL_PARAM_TOKENS = 24

_TASK_INDEX = {task: i for i, task in enumerate(TASK_TYPES)}
_CODING, _REASONING, _MATH, _CREATIVE, _CHAT, _EXTRACTION, _AGENTIC = range(7)


class Classification:
    """What :func:`classify` found out about a request."""

    __slots__ = (
        "complexity",
        "language",
        "long_context",
        "needs_tools",
        "needs_vision",
        "prompt_tokens",
        "task",
        "tier",
    )

    def __init__(
        self,
        task: str,
        tier: str,
        complexity: float,
        prompt_tokens: int,
        needs_tools: bool,
        needs_vision: bool,
        long_context: bool,
        language: str,
    ) -> None:
        self.task = task
        self.tier = tier
        self.complexity = complexity
        self.prompt_tokens = prompt_tokens
        self.needs_tools = needs_tools
        self.needs_vision = needs_vision
        self.long_context = long_context
        self.language = language

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Classification({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Classification):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- vocabulary
#
# Words are matched whole, lower-cased (ASCII letters only: capitalised forms of
# non-ASCII words are added below), after ASCII punctuation became spaces.
# Weights: 4 = the word nearly names the task, 2 = a good hint, 1 = a weak hint.
# Lists are general vocabulary per task in several languages, not phrases from
# any evaluation prompt.

_TASK_WORDS: dict[str, dict[int, str]] = {
    "coding": {
        4: """
            coding regex regexp compiler compiles refactor refactoring debug debugging
            stacktrace traceback segfault typeerror valueerror nullpointerexception indexerror keyerror
            syntaxerror comprehension lambda closure iterator generator decorator struct enum
            代码 编程 报错 调试 程序 中间件
            コード プログラム バグ デバッグ 実装 配列
            código programación depurar
            programmation débogage
            programmieren methode klasse quellcode fehlermeldung
            код кода программу программа отладка скрипт
            codice
        """,
        2: """
            code function functions method methods class classes exception 函数 関数 función fonction
            funktion функцию функция функции funzione programa programma endpoint endpoints schema query
            queries commit script scripts module modules implement implementation algorithm array arrays
            string strings integer boolean pointer async await mutex lock-free loop loops recursion
            recursive unittest unit tests test lint linter component components render re-renders props
            hook hooks serializer orm migrations chmod sudo subcommand subcommands args argv stdin stdout
            stderr спроектировать div span flexbox selector dom navbar viewport stylesheet
            程式 函式 程式碼
            escribe escríbeme implementa clase método variable cadena entero arreglo consulta esquema
            écris écrire classe méthode chaîne entier requête tableau
            schreib schreibe klasse variable abfrage datenbank
            напиши класс метод строку массив запрос базу
            escreva escrever componente classe
            scrivi classe metodo
        """,
        1: """
            fix fixes optimize faster compile variable variables
            file files line lines review build install version upgrade config configuration
            erreur fehler ошибка ошибку error erro errore
        """,
    },
    "reasoning": {
        4: """
            logic logical logically reasoning syllogism fallacy fallacies paradox riddle puzzle deduce
            deduction deduce infer inference premise premises counterexample dilemma
            lógica lógico lógicamente razonamiento razonar razona deducir falacia paradoja acertijo
            logique logiquement raisonnement raisonner déduire paradoxe énigme sophisme
            logik logisch logische widersprüchlich schlussfolgerung paradox rätsel folgern
            логика логически логический рассуждение рассуждай рассуждения парадокс загадка вывод
            lógica raciocínio deduzir paradoxo
            logica ragionamento dedurre paradosso
            推理 逻辑 悖论 谜题 说谎
            論理 論理的 推論 矛盾 反論 反例
        """,
        2: """
            why argument arguments argue reason reasons conclude conclusion conclusions follow follows
            evidence assumption assumptions tradeoff tradeoffs trade-off trade-offs weigh
            decide decision decisions rational irrational moral morally ethical ethics implications
            causation correlation cause causes caused analyze analyse evaluate assess justify
            consequentialist kantian utilitarian contractualist strongest weakest objection objections
            counterargument compare comparison whether fair unfair bias biased truth root lying liar
            explanation explanations hypothesis misleading
            porque argumento argumentos concluir conclusión razona decisión factores pesan
            pourquoi arguments argument conclure objections évalue décision
            warum argumente abwägen begründen begründete empfehlung entscheidung
            почему причины причина аргументы проанализируй анализ оцени вывод
            porquê argumento concluir conclusão raciocine
            perché argomento concludere
            为什么 分析 原因 论证 结论 偏差 判断 因果
            なぜ 理由 分析 論じ 因果関係 根拠
        """,
        1: """
            think should better worse best worst explain consider strategy risk risks factors
            scenario option options choice choose alternative likely probably true false pros cons
            heavier lighter taller shorter wrong exactly neither either
            all some none therefore hence thus implies imply valid invalid
            todos algunos ningún ninguno tous certains aucun alle einige kein keine folgt daraus
            все некоторые значит следует alguns nenhum tutti alcuni nessun quindi
            所有 有些 推出 因此 すべて いくつか ならば
            pensar pensez denken думаешь
        """,
    },
    "math": {
        4: """
            math maths mathematics equation equations integral integrals derivative derivatives
            differentiate integrate calculus algebra algebraic geometry theorem lemma eigenvalue
            eigenvalues eigenvectors matrix matrices polynomial polynomials logarithm probability
            probabilities factorial modulo divisible prime primes integer integers irrational
            inequality inequalities converge converges convergence sqrt arithmetic combinatorics
            permutations variance
            ecuación ecuaciones integral derivada probabilidad matemáticas resuelve calcula cuánto
            cuántos cuántas álgebra teorema demuestra demostrar
            équation équations intégrale dérivée probabilité mathématiques calcule calculer démontre
            démontrer théorème combien limite
            gleichung gleichungen integral ableitung wahrscheinlichkeit mathematik berechne beweise
            beweisen satz zinseszins prozent
            уравнение уравнения интеграл производная вероятность математика вычисли вычислите
            докажите докажи сумму прогрессии неравенство сколько
            equação equações derivada probabilidade matemática calcule quanto quantos
            equazione equazioni derivata probabilità matematica calcola quanti quante
            计算 等于 方程 概率 证明 整除 积分 导数 几何 函数值 多少
            計算 方程式 確率 証明 最大値 最小値 微分 積分 何個 求め
        """,
        2: """
            solve calculate compute prove proof percent percentage average median sum
            fraction fractions ratio compounded formula digits limit series sequence expected
            squared cubed root roots triangle circle area volume angle degrees odds dice
            celsius fahrenheit convert kilometers miles mph
            resuelve sistema suma media porcentaje
            résous somme moyenne pourcentage
            löse summe durchschnitt
            реши найди сумма среднее процент
            resolva soma média porcentagem
            risolvi somma media percentuale
        """,
        1: """
            many each per times twice half halves third thirds quarter quarters plus minus minutes
            double triple tip doppelt dreimal viermal halb doble mitad diviso moltiplicato
            вдвое втрое 倍 計算 機率
            hours days variable variables
            age older younger speed distance total mean product rate interest
        """,
    },
    "creative": {
        4: """
            poem poems poetry poet haiku limerick sonnet verse verses lyrics song songs rap ballad
            story stories tale fairytale fable novel novella chapter fiction screenplay slogan slogans
            tagline taglines pun puns joke jokes toast rhyme rhymes rhyming myth legend bedtime
            storytelling
            poema poemas poesía cuento cuentos relato historia eslogan eslóganes canción rima
            poème poèmes poésie conte histoire chanson rimes slogan
            gedicht gedichte geschichte märchen lied reim reime werbespruch slogan
            стихотворение стих стихи рассказ сказка сказку песня песню слоган
            poema poesia conto história canção
            poesia filastrocca racconto storia canzone
            诗 诗歌 故事 小说 歌词 口号 童话 起名
            俳句 物語 小説 歌詞 詩 短歌
        """,
        2: """
            creative imagine invent character characters plot scene dialogue narrator villain hero
            fantasy noir mystery romance script ad tweet catchy playful whimsical heartfelt funny
            names motivational quote caption captions bio headline
            nouvelle fábula racconti 寫 散文
            inventa imagina personaje nombres
            invente imagine personnage noms
            erfinde figur namen lustig lustigen
            придумай персонаж
            invente personagem nomes
            inventa personaggio nomi
            名字 创作
            名前 テーマ
        """,
        1: """
            write compose draft rewrite style tone voice words
            escribe escríbeme écris schreib schreibe напиши escreva scrivi
            写 写一 書いて 作って
        """,
    },
    "chat": {
        2: """
            你好 谢谢 こんにちは ありがとう morning evening
            recommend recommendation favorite favourite suggest opinion advice tips chat talk
            recomiendas recomiendes recomendar consejo
            recommandes conseil connais
            empfiehlst tipp tipps
            посоветуй совет
            recomenda dica
            consigli consiglio
            推荐 聊聊 聊天 建议
            おすすめ
        """,
        1: """
            hi hello hey hiya thanks thank ty thx lol haha howdy greetings
            hola gracias bonjour salut merci hallo danke привет спасибо oi olá obrigado obrigada
            ciao grazie
            who where when what's fun fact meaning visit travel trip weather today tonight weekend
            movie book books restaurant food
            qué dónde quién quoi où qui wo wer где кто onde quem dove chi
        """,
    },
    "extraction": {
        5: """
            extract extracts extraction parse parsing classify categorize categorise tag label 分類 找出
            extrae extraer extraiga extraes saca clasifica
            extrais extraire extrayez relève classe
            extrahiere extrahieren extrahiert
            извлеки извлечь выпиши выдели классифицируй
            extraia extrair classifique
            estrai estrarre estrarre classifica
            提取 抽取 整理成 分类
            抽出 抜き出し 抜き出して
        """,
        2: """
            json csv fields entities entity mentioned mentions structured summarize summarise
            summary bullet bullets pull list emails addresses phone dates names
            identify fill table columns key points sentiment intent
            lista campos nombres fechas formato resume resumen
            liste champs montants noms dates tableau résume
            felder liste namen daten tabelle
            список поля даты имена перечисли
            lista campos nomes datas formato
            elenco campi nomi
            列出 人名 地名 优点 缺点
            日付 場所 顧客名 形式
        """,
        1: """
            every all following text paragraph document report transcript email receipt invoice
            cv resume log logs items find count тексте текста текст which siguiente siguientes suivant
            suivante suivants folgende folgenden seguinte seguintes seguente seguenti следующий следующего
        """,
    },
    "agentic": {
        4: """
            agent agents agentic autonomous autonomously tool tools orchestrator orchestrate sub-agent
            subagents
            agente agentes herramienta herramientas
            agent outil outils
            agent werkzeug werkzeuge
            агент агента инструмент инструменты
            agente ferramenta ferramentas
            agente strumento strumenti
            代理 工具 智能体
            エージェント ツール
        """,
        2: """
            browse browser navigate click book booking schedule calendar invite remind reminder
            inbox archive folder drive slack jira trello confluence notion spreadsheet sheet
            execute workflow automate automation monitor watch sync steps step re-plan replan send
            open search
            busca búscame reserva envía ejecuta pasos agenda
            cherche ajoute exécute étape étapes agenda envoie
            schau schick führe schritte kalender einladung richte
            зайди выполни отправь перезапусти шаг шаги
            pesquise busque envie execute adicione reserve planilha
            cerca prenota esegui invia
            搜索 执行 打开 帮我 重启 清理 检查
            探して 実行 検索 手順 カート 投稿
        """,
        1: """
            find order buy file create move share post ticket run check update first then until
            afterwards plan email
        """,
    },
}

#: technology names and software domain nouns: a hint of coding, but they name the
#: material (a CV, a job post, server logs) more often than the work asked for, so
#: together they count for at most _DOMAIN_CAP
_DOMAIN_WORDS = {
    2: """
        api backend frontend database repo repository branch merge deploy framework package library
        libraries bug bugs crash crashes stack heap memory leak leaks goroutine goroutines oom cache lru
        thread threads concurrency cli yaml toml webhook http https middleware microservice
        microservices microservicios server servers client runtime architecture architectures latency
        throughput idempotent idempotency transactions replication sharding cluster exactly-once
        distributed scalable sdk cpu gpu terminal linux ide vscode vim indexes performance
        error errors broken slow type types
        接口 数据库 архитектуру архитектура транзакций транзакции
    """,
    4: """
    python javascript typescript java kotlin golang rust c++ cpp c# csharp php ruby swift scala haskell
    elixir sql postgres postgresql mysql sqlite mongodb redis bash zsh powershell dockerfile docker
    kubernetes k8s git github gitlab npm pnpm yarn pip pytest jest junit react vue angular svelte nextjs
    django flask fastapi rails spring node nodejs html css jsx tsx kafka graphql grpc nginx terraform
    ansible aws gcp azure jvm llvm wasm webassembly
    """,
}
_DOMAIN_CAP = 8  # half-points: 4 points, one strong keyword

#: words that make a request harder (+) or easier (-) for a model
_COMPLEXITY_WORDS: dict[int, str] = {
    3: """
        architecture architect distributed scalable scalability concurrency concurrent exactly-once
        consistency lock-free prove proof rigorous rigorously theorem derive derivation orchestrator
        orchestrate migrate migration comprehensive in-depth thorough nuanced literary sonnet pentameter
        arquitectura concurrencia demuestra demostrar migración migrar
        concevoir démontre démontrer migrer
        architektur migrieren beweise beweisen
        архитектура спроектировать докажите доказать миграция
        arquitetura demonstre demonstrar
        architettura dimostra dimostrare
        架构 证明 迁移
        証明 論じ
    """,
    2: """
        design compare comparison trade-offs tradeoffs weigh evaluate analyze analyse analysis
        implications strategy strategic optimize optimise production investigate mitigate diagnose
        constraints requirements uncertainty strongest weakest negotiate contract algorithm
        multi-tenant pipeline hypothesis dependencies
        diseñar diseña compara analiza evalúa estrategia
        analyse évalue stratégie compare
        entwerfen analysiere bewerte abwägen strategie
        проанализируй сравни оцени стратегия
        analise avalie estratégia
        analizza valuta strategia
        设计 分析 影响 排查
        設計 分析 影響 観点
    """,
    # concepts past arithmetic, longer creative forms, artifacts to build, length requests
    1: """
        integral integrals derivative derivatives probability eigenvalues eigenvectors matrix limit
        series converge convergence inequality polynomial expected variance
        integral derivada probabilidad límite intégrale dérivée probabilité ableitung
        wahrscheinlichkeit интеграл производная вероятность предел derivata probabilità probabilidade
        概率 导数 积分 極限 確率 微分 積分 最大値
        story stories lyrics song chapter scene dialogue toast script outline character myth legend
        cuento historia relato canción histoire chanson conte geschichte lied рассказ сказку
        стихотворение песню conto história racconto canzone 故事 小说 物語 小説
        implement implementation function class tests component endpoint query
        words palabras mots wörter слов palavras parole
    """,
    -1: """
        haiku slogan slogans tagline pun puns joke jokes tweet quote names limerick
        eslogan eslóganes werbespruch слоган 俳句 口号 名字
    """,
    -2: """
        hi hello hey thanks thank simple quick quickly brief briefly one-liner tl;dr typo easy basic
        simply hola gracias bonjour merci hallo danke привет спасибо oi olá ciao grazie breve rápido
        einfach простой 你好 谢谢 简单 こんにちは ありがとう 簡単
    """,
}

# Function words per Latin-script language other than English: the language of the
# last user message is the one with most distinct function words in its instruction
# zone, if they are at least 2 and _LANG_SHARE of its words; otherwise English (the
# default needs no words, which keeps the most frequent words out of the sums).
_LATIN_LANGS = ("es", "fr", "de", "pt", "it", "nl")
_LANG_SHARE = 0.08
_LANG_WORDS: dict[str, str] = {
    "es": """de el la los las del y es son en un una por para con qué que cómo cuál cuánto mi tu lo se este
        esta muy pero más hay sin sobre todos también está puedes tengo dame hola gracias va""",
    "fr": """de le la les des du et est en un une je tu il elle vous nous pour pas ne que qui dans sur avec
        ce cette au aux mon ma mes ton peux quelle quel comment pourquoi c l qu j à bonjour merci salut
        voici""",
    "de": """der das und ist ein eine einen einer nicht ich du sie wir mit für auf von zu den dem des im wie
        es bitte kann wird auch oder aber mir mich dir dich mein meine noch nach hallo danke guten sind
        dass wenn können haben sein werden bei aus über unter um sich heute""",
    "pt": """de e o os um uma da dos das não é em na nos nas com para por você que mais se eu meu minha isso
        está são também ao à pelo pela foi tem deste desta este esta oi olá obrigado""",
    "it": """il lo la gli le di del della delle dei e è che per un una non sono con mi ti questo questa cosa
        perché anche ma ho hai ci sul nel alla ciao grazie fa da quanto quale qual dove buon buona
        molto tutto può puoi vorrei mio mia""",
    "nl": """de het een en van niet ik je jij wij zijn met voor op te dat wat hoe waarom ook maar naar bij
        mijn kun kunt""",
    # English homographs (as, no, do, is, come, man, am, was, me...) are left out
}

# Packed weights: one integer per keyword, 16-bit little-endian fields: one per
# task, one for software-domain nouns, two for complexity (+/-), one per Latin
# language. The words summed come from at most ~520 characters (zone and system
# head: a few hundred distinct words, each at most ~10 per field), so no field
# can reach 2**16 and carry into the next; struct unpacks all fields in one call.
_F_DOMAIN = len(TASK_TYPES)
_F_CX_UP = _F_DOMAIN + 1
_F_CX_DOWN = _F_CX_UP + 1
_F_LANG = _F_CX_DOWN + 1
_FIELDS = _F_LANG + len(_LATIN_LANGS)
_FIELD_BYTES = 2 * _FIELDS
_LANG_SHIFT = 16 * _F_LANG
_unpack_fields = struct.Struct(f"<{_FIELDS}H").unpack
_unpack_langs = struct.Struct(f"<{len(_LATIN_LANGS)}H").unpack


def _variants(word: str) -> set[str]:
    # bytes.lower() lowers ASCII letters only: a capitalised non-ASCII initial is listed
    return {word, word.capitalize()} if not word[0].isascii() else {word}


def _is_cjk(word: str) -> bool:
    """Written without spaces between words (Han, kana, Hangul): matched as a substring."""
    return any("\u2e80" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff" for c in word)


def _build() -> tuple[dict[bytes, int], dict[str, tuple[tuple[str, int], ...]]]:
    packed: dict[bytes, int] = {}
    cjk: dict[str, int] = {}

    def add(word: str, field: int, weight: int) -> None:
        value = weight << (16 * field)
        if _is_cjk(word):
            cjk[word] = cjk.get(word, 0) + value
            return
        for form in _variants(word):
            key = form.encode()
            packed[key] = packed.get(key, 0) + value

    for task, groups in _TASK_WORDS.items():
        for weight, words in groups.items():
            for word in set(words.split()):
                add(word, _TASK_INDEX[task], weight)
    for weight, words in _DOMAIN_WORDS.items():
        for word in set(words.split()):
            add(word, _F_DOMAIN, weight)
    for weight, words in _COMPLEXITY_WORDS.items():
        for word in set(words.split()):
            add(word, _F_CX_UP if weight > 0 else _F_CX_DOWN, abs(weight))
    for i, lang in enumerate(_LATIN_LANGS):
        for word in set(_LANG_WORDS[lang].split()):
            add(word, _F_LANG + i, 1)
    by_first: dict[str, list[tuple[str, int]]] = {}
    for word in sorted(cjk):
        by_first.setdefault(word[0], []).append((word, cjk[word]))
    return packed, {first: tuple(entries) for first, entries in by_first.items()}


_PACKED, _CJK_BY_FIRST = _build()
_KEYWORDS = frozenset(_PACKED)
_CJK_FIRST = frozenset(_CJK_BY_FIRST)
_packed_get = _PACKED.__getitem__

# Byte tables.
# _SPLIT: ASCII punctuation becomes a space (word separators), except '+', '#' and
# '-' (c++, c#, trade-offs).
_split = bytearray(range(256))
for _c in b"!\"$%&'()*,./:;<=>?@[\\]^_`{|}~\t\n\r\f\v":
    _split[_c] = 32
_SPLIT_TABLE: Final = bytes(_split)
# _SPLIT_CJK: the same, and non-ASCII bytes too: the Latin words inside CJK text
# (which has no spaces) come out on their own; CJK keywords are matched as substrings.
for _c in range(0x80, 0x100):
    _split[_c] = 32
_SPLIT_CJK_TABLE: Final = bytes(_split)
# _CLASS: letters -> 'a', digits -> '0', whitespace -> ' ' or '\n', non-ASCII -> 'u',
# code punctuation {};|&\~ -> 'c', arithmetic +*^% -> 'm', brackets folded.
_cls = bytearray(range(256))
for _c in range(256):
    if 65 <= _c <= 90 or 97 <= _c <= 122:
        _cls[_c] = ord("a")
    elif 48 <= _c <= 57:
        _cls[_c] = ord("0")
    elif _c >= 0x80:
        _cls[_c] = ord("u")
for _c in b"\t\r\f\v":
    _cls[_c] = ord(" ")
for _c in b"{};|&\\~":
    _cls[_c] = ord("c")
for _c in b"+*^%":
    _cls[_c] = ord("m")
for _c in b"[]":
    _cls[_c] = ord("[")
for _c in b"()":
    _cls[_c] = ord("(")
for _c in b"<>":
    _cls[_c] = ord("<")
_CLASS_TABLE: Final = bytes(_cls)
#: deleted before classing to keep only the marks: punctuation, digits, line breaks
_NOT_MARKS: Final = bytes(c for c in range(256) if _cls[c] in b"au ")
del _split, _cls, _c

#: a greeting as the first or second word of the user message makes small talk likely
_GREETING_WORDS = """hi hello hey hiya thanks thank ty thx lol haha howdy greetings hola gracias bonjour
    salut merci hallo danke привет спасибо oi olá obrigado obrigada ciao grazie"""
_GREETINGS = frozenset(form.encode() for word in _GREETING_WORDS.split() for form in _variants(word))
_FULLWIDTH_QUESTION = "\uff1f".encode()  # full-width question mark
_UK_YI, _UK_YE, _UK_I = (c.encode() for c in "\u0457\u0454\u0456")  # letters Ukrainian has and Russian lacks
_CJK_GREETINGS = ("你好", "您好", "谢谢", "こんにちは", "こんばんは", "おはよう", "ありがとう", "안녕")

#: the context patterns (calls, indentation, numbers) are counted in this many bytes
_CONTEXT_BYTES = 200
_IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})

# Task priors for complexity and the tier thresholds on the complexity scale.
_TASK_PRIOR = (0.2, 0.25, 0.18, 0.12, 0.0, 0.0, 0.15)
_ECO_BELOW = 0.28
_PREMIUM_FROM = 0.62


# --------------------------------------------------------------------------- sampling


def _text_of(content: str | list[ContentPart] | None) -> tuple[str, str, int]:
    """Head (``USER_HEAD`` chars) and tail (``USER_TAIL``) of a message's text, and its length."""
    if isinstance(content, str):
        n = len(content)
        if n <= USER_HEAD + USER_TAIL:
            return content, "", n
        return content[:USER_HEAD], content[-USER_TAIL:], n
    if not content:
        return "", "", 0
    texts = [p.text for p in content if isinstance(p.text, str)]
    if not texts:
        return "", "", 0
    n = sum(map(len, texts))
    if len(texts) == 1 or n <= USER_HEAD + USER_TAIL:
        joined = texts[0] if len(texts) == 1 else "\n".join(texts)
        head, tail, _ = _text_of(joined)
        return head, tail, n
    return texts[0][:USER_HEAD], texts[-1][-USER_TAIL:], n


def _part_tokens(part: ContentPart, cpt: float) -> int:
    text = part.text
    if isinstance(text, str):
        return int(len(text) / cpt) + 1
    if part.image_url is not UNSET or part.type in _IMAGE_TYPES:
        return _IMAGE_TOKENS
    data = part.file.get("file_data") if isinstance(part.file, dict) else None
    if isinstance(data, str):
        return len(data) // 4 + 1  # base64 payload: a generous bound for text-like files
    return _OTHER_PART_TOKENS


def _tools_tokens(tools: list[dict[str, Any]]) -> int:
    total = 0
    for tool in tools:
        total += _TOOL_TOKENS
        spec = tool.get("function", tool)
        if isinstance(spec, dict):
            for key in ("name", "description"):
                value = spec.get(key)
                if isinstance(value, str):
                    total += len(value) // 3 + 1
            params = spec.get("parameters")
            if isinstance(params, dict):
                props = params.get("properties")
                if isinstance(props, dict):
                    total += _TOOL_PARAM_TOKENS * len(props)
    return total


def _words(data: bytes, cjk: bool) -> list[bytes]:
    """Lower-cased words of UTF-8 ``data``; of CJK text, the Latin words glued into it."""
    return data.lower().translate(_SPLIT_CJK_TABLE if cjk else _SPLIT_TABLE).split()


# --------------------------------------------------------------------------- classify


def classify(request: ChatCompletionRequest) -> Classification:
    """Classify ``request``; the cost is bounded by the sample size, not the prompt size."""
    messages = request.messages
    tools = request.tools if isinstance(request.tools, list) else None

    # One pass over the messages: lengths only (O(1) each), and which ones to sample.
    system: ChatMessage | None = None
    user: ChatMessage | None = None
    n_chars = 0
    part_messages: list[ChatMessage] = []
    tool_traffic = False
    for message in messages:
        content = message.content
        if isinstance(content, str):
            n_chars += len(content)
        elif content:
            part_messages.append(message)
        role = message.role
        if role == "user":
            user = message
        elif role == "system" or role == "developer":
            if system is None:
                system = message
        elif role == "tool" or role == "function":
            tool_traffic = True
        elif role == "assistant" and message.tool_calls:
            tool_traffic = True
            for call in message.tool_calls:  # name and arguments are text the model reads
                n_chars += _TOOL_CALL_CHARS
                if call.function and isinstance(call.function.arguments, str):
                    n_chars += len(call.function.arguments)

    # The sample: head and tail of the last user message (or, without one, of the
    # system message or the last message), head of the system message.
    sys_text = ""
    if user is None:
        user = system
        if user is None and messages:
            user = messages[-1]
    elif system is not None:
        sys_text = _text_of(system.content)[0][:SYSTEM_HEAD]
    head, tail, user_len = _text_of(user.content) if user is not None else ("", "", 0)

    # Words come from the instruction zone: the start and the end of the message.
    zone = head[:_ZONE_HEAD] + "\n" + (tail or head)[-_ZONE_TAIL:] if user_len > _ZONE_HEAD + _ZONE_TAIL else head
    user_text = head + "\n" + tail if tail else head
    ub = user_text.encode()
    n_user = len(user_text)
    extra = len(ub) - n_user  # bytes beyond one per character: accents or another script
    if n_user == 0:
        n_user = 1
    # CJK: many 3-byte characters (2 extra bytes each) beyond the 2-byte Cyrillic ones
    cjk = extra * 4 > n_user and (extra - ub.count(b"\xd0") - ub.count(b"\xd1")) * 4 > n_user
    if extra:  # Spanish questions and exclamations open with ¿ / ¡, not split off as ASCII is
        zone = zone.replace("¿", " ").replace("¡", " ")

    zb = zone.encode()
    words = _words(zb, cjk)
    packed_zone = sum(map(_packed_get, _KEYWORDS.intersection(words)))
    if cjk:  # CJK keywords are not space-separated: substring checks, indexed by first character
        for first in _CJK_FIRST.intersection(zone):
            for word, value in _CJK_BY_FIRST[first]:
                if word in zone:
                    packed_zone += value
    total = 2 * packed_zone  # the zone weighs double the system message
    if sys_text:
        total += sum(map(_packed_get, _KEYWORDS.intersection(_words(sys_text.encode(), False))))
    # Scores are in half-points from here on (the zone counted twice).
    fields = _unpack_fields(total.to_bytes(_FIELD_BYTES, "little"))
    scores: list[float] = list(fields[:_F_DOMAIN])
    domain = fields[_F_DOMAIN]
    scores[_CODING] += domain if domain < _DOMAIN_CAP else _DOMAIN_CAP
    if (words and (words[0] in _GREETINGS or (len(words) > 1 and words[1] in _GREETINGS))) or (
        cjk and zone.startswith(_CJK_GREETINGS)
    ):
        scores[_CHAT] += 6

    # Symbols. Most counts run on the marks alone (punctuation classes, digits, line
    # breaks: a short string); the patterns that need context (a call, an indented
    # line, separate numbers) on the first _CONTEXT_BYTES, and only where they can occur.
    marks = ub.translate(_CLASS_TABLE, _NOT_MARKS)
    n_code = marks.count(b"c")
    # + * ^ %, fractions, amounts: 18% and $64 (digits next to % or $)
    n_ops = marks.count(b"m") + marks.count(b"0/0") + marks.count(b"0m") + marks.count(b"$0")
    n_eq = marks.count(b"=")
    questions = marks.count(b"?")
    n_digit = marks.count(b"0")
    lines = marks.count(b"\n")
    calls = indented = numbers = 0
    if lines > 1 or b"(" in marks or (questions and n_digit > 1):
        cls = ub[:_CONTEXT_BYTES].translate(_CLASS_TABLE)
        calls = cls.count(b"aa(")  # name(...): a call; f(x) (one letter) is left to math
        if lines > 1:
            indented = cls.count(b"\n  ")
        if n_digit > 1:
            numbers = cls.count(b" 0") + cls.startswith(b"0")
    if extra:
        n_ops += ub.count(b"\xe2\x88") + ub.count(b"\xe2\x89")  # U+2200-U+227F: math operators
        questions += ub.count(_FULLWIDTH_QUESTION)

    if n_eq > 1 and (b"==" in ub or b"=>" in ub or b"!=" in ub):
        n_code += n_eq  # comparison and arrow operators: code, not equations
        n_eq = 0
    code_sig = 2.0 * (n_code + calls + indented) + 0.5 * (marks.count(b"_") + marks.count(b"`"))
    if b"```" in marks:
        code_sig += 16.0
    if code_sig:
        scores[_CODING] += min(16.0, 32.0 * code_sig / (n_user + 10) + 2.0 * math.sqrt(code_sig))
    math_sig = 3.0 * n_ops + 2.0 * n_eq + (n_digit if n_digit < 12 else 12) - 2.0 * code_sig
    if math_sig > 0:
        scores[_MATH] += min(10.0, 24.0 * math_sig / (n_user + 20))
    if questions and code_sig < 4:
        if numbers >= 2:
            scores[_MATH] += 2 if numbers == 2 else 3  # quantities and a question: a word problem
        if user_len > 120 and marks.count(b".") + marks.count(b",") + marks.count(b":") >= 3:
            scores[_REASONING] += 3  # a question set up by several statements: a puzzle, a judgement

    # Hard signals: tools offered, or the conversation already is a tool loop.
    if tools:
        scores[_AGENTIC] += 12
    if tool_traffic:
        scores[_AGENTIC] += 16

    best = max(scores)
    task = scores.index(best) if best >= 4 else _CHAT  # below 2 points: nothing stands out

    # Prompt tokens: characters per token measured on the sample as words plus
    # twice the punctuation marks (a mark is a token and splits a word in two), at
    # most _MAX_CPT; non-Latin scripts take more tokens per character.
    cpt = 1.0 / ((len(words) + 1) / (len(zone) + 1) + 2.0 * (len(marks) - n_digit - lines) / n_user)
    if cpt > _MAX_CPT:
        cpt = _MAX_CPT
    if extra:
        ratio = len(ub) / n_user
        cpt = 1.0 if ratio > 2.0 else min(cpt, _MAX_CPT / ratio)
    if cpt < 1.0:
        cpt = 1.0
    tokens = int(n_chars / cpt) + _PER_MESSAGE * len(messages)
    needs_vision = False
    for message in part_messages:
        content = message.content
        if isinstance(content, list):
            for part in content:
                tokens += _part_tokens(part, cpt)
                if part.image_url is not UNSET or part.type in _IMAGE_TYPES:
                    needs_vision = True
    if tools:
        tokens += _tools_tokens(tools)

    # Complexity: task prior + size + hard/easy vocabulary + clauses of the instruction.
    size = math.log2(1.0 + (user_len + 0.25 * len(sys_text)) / (25.0 if cjk else 60.0)) * 0.125
    complexity = _TASK_PRIOR[task] + 0.4 * (size if size < 1.0 else 1.0)
    up = fields[_F_CX_UP]
    down = fields[_F_CX_DOWN]
    complexity += 0.05 * (up if up < 12 else 12) - 0.04 * (down if down < 8 else 8)
    clauses = zb.count(b",") + zb.count(b".")
    if cjk:  # full-width comma, ideographic full stop and comma
        clauses += zone.count("\uff0c") + zone.count("\u3002") + zone.count("\u3001")
    complexity += 0.02 * (clauses if clauses < 8 else 8)
    if tools:
        complexity += 0.03 * min(4, len(tools))
    if tool_traffic:
        complexity += 0.08
    if len(messages) > 2:
        complexity += 0.01 * min(10, len(messages))
    complexity = 0.0 if complexity < 0.0 else 1.0 if complexity > 1.0 else int(complexity * 10_000 + 0.5) / 10_000
    tier = "eco" if complexity < _ECO_BELOW else "premium" if complexity >= _PREMIUM_FROM else "auto"

    return Classification(
        TASK_TYPES[task],
        tier,
        complexity,
        tokens,
        bool(tools),
        needs_vision,
        tokens > LONG_CONTEXT_TOKENS,
        _script_language(ub, n_user)
        if extra * 3 > n_user
        else _latin_language(packed_zone, len(words))
        if packed_zone >> _LANG_SHIFT
        else "en",
    )


def _script_language(ub: bytes, n_user: int) -> str:
    """Language of a mostly non-Latin text, from UTF-8 lead bytes (C-level counts)."""
    cyr = ub.count(b"\xd0") + ub.count(b"\xd1")
    if cyr * 4 > n_user:
        return "uk" if ub.count(_UK_YI) + ub.count(_UK_YE) + ub.count(_UK_I) else "ru"
    kana = ub.count(b"\xe3\x81") + ub.count(b"\xe3\x82") + ub.count(b"\xe3\x83")
    if kana * 12 > n_user:
        return "ja"
    hangul = ub.count(b"\xea") + ub.count(b"\xeb") + ub.count(b"\xec") + ub.count(b"\xed")
    if hangul * 6 > n_user:
        return "ko"
    han = sum(map(ub.count, (b"\xe4", b"\xe5", b"\xe6", b"\xe7", b"\xe8", b"\xe9")))
    if han * 6 > n_user:
        return "ja" if kana else "zh"
    for lead, code in ((b"\xd8", "ar"), (b"\xd9", "ar"), (b"\xd7", "he"), (b"\xce", "el"), (b"\xcf", "el")):
        if ub.count(lead) * 4 > n_user:
            return code
    if ub.count(b"\xe0\xa4") * 4 > n_user:
        return "hi"
    if (ub.count(b"\xe0\xb8") + ub.count(b"\xe0\xb9")) * 4 > n_user:
        return "th"
    return "en"


def _latin_language(packed: int, n_words: int) -> str:
    """Language of a Latin-script text from the function words counted in ``packed``."""
    hits = _unpack_langs((packed >> _LANG_SHIFT).to_bytes(2 * len(_LATIN_LANGS), "little"))
    best = max(hits)
    if best >= 2 and best >= _LANG_SHARE * n_words:
        return _LATIN_LANGS[hits.index(best)]
    return "en"
