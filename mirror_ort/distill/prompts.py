"""The built-in distillation prompt set: a few hundred varied requests, generated from templates.

It covers the kinds of work SpecBench measures (writing, roleplay, reasoning, math,
coding, extraction, STEM, humanities, translation, summarization, QA, RAG-like
reading) without using a single SpecBench prompt: that set is the benchmark, and a
draft trained on it would flatter every figure measured with it. Every passage and
sentence here was written for this module.

The set is deterministic; ``held_out`` marks about one prompt in ten, kept out of
training to measure agreement on text the draft has never seen.
"""

import random
import zlib
from dataclasses import dataclass

HELD_OUT_EVERY = 10


@dataclass(frozen=True)
class Prompt:
    category: str
    text: str

    @property
    def held_out(self) -> bool:
        return zlib.crc32(self.text.encode()) % HELD_OUT_EVERY == 0


PASSAGES = [
    "The town of Ellersby sits where two rivers meet, and for three centuries its economy rested on a single "
    "paper mill. When the mill closed in 2009, nearly a third of the town's jobs vanished within a year. The "
    "council responded by turning the empty mill into a workshop space for small manufacturers, offering low "
    "rent for the first five years. By 2020 the building housed forty firms, among them a bicycle maker, a "
    "ceramic studio and a company that builds sensors for farm irrigation. Unemployment fell back to the "
    "regional average, although wages remain lower than they were in the mill's final decade.",
    "Honeybees communicate the location of food through a movement called the waggle dance. A forager returning "
    "to the hive runs in a straight line while shaking its body, then circles back and repeats. The angle of the "
    "run relative to vertical encodes the direction of the food relative to the sun, and the length of the run "
    "encodes the distance. Other bees follow the dancer, learn the route, and fly out to the same flowers. "
    "Researchers have found that colonies adjust how often bees dance depending on how rich the food source is.",
    "Last spring the city library launched a program that lends tools instead of books. Residents with a library "
    "card can borrow drills, ladders, sewing machines and even a pressure washer for up to one week. The program "
    "started with 150 donated items and now has more than 600. Librarians say the most popular item is a simple "
    "stud finder, which has been borrowed over 300 times. A survey of users found that most of them would "
    "otherwise have bought a tool they needed only once.",
    "Glass is made by melting sand, soda ash and limestone at about 1,500 degrees Celsius. The soda ash lowers "
    "the melting point of the sand, while the limestone makes the final glass resistant to water. Once molten, "
    "the mixture can be floated on a bath of liquid tin to make flat window panes, blown into bottles, or drawn "
    "into fibers. Because glass has no regular crystal structure, it softens gradually when heated rather than "
    "melting at a single temperature, which is what allows glassblowers to shape it.",
    "Mara Okonkwo started her bakery in a rented kitchen with one oven and a bicycle for deliveries. In the first "
    "year she sold bread only to neighbors who ordered through a group chat. Word spread, and two cafés began "
    "buying her sourdough every morning. She now employs nine people and operates from a shop on the main "
    "street, but she still rides the bicycle on Saturdays. Okonkwo says the hardest lesson was learning to say "
    "no to orders she could not fill without lowering quality.",
    "The Great Fire of 1871 destroyed about a third of the city's buildings in under two days. Dry weather, "
    "strong winds and streets paved with wooden planks helped the flames spread. After the fire, the city passed "
    "laws requiring new buildings in the center to be made of brick or stone. Architects who came to help with "
    "the rebuilding experimented with steel frames, and within twenty years the city was home to some of the "
    "first tall office buildings in the world.",
    "A new study followed 2,000 adults for ten years to measure how daily walking affects health. Participants "
    "who walked at least 7,000 steps a day had a 40 percent lower risk of dying during the study than those who "
    "walked fewer than 4,000. The benefit leveled off above about 10,000 steps. Walking speed mattered less than "
    "the total number of steps. The authors caution that the study shows an association and cannot prove that "
    "walking itself caused the difference.",
    "Our company will move to a four-day work week starting in March. Employees will work 32 hours over four "
    "days and keep their full salary. Customer support will stay open five days a week, with staff rotating "
    "their day off. The change follows a six-month trial in which productivity stayed level and sick days fell "
    "by a quarter. Managers will review the results again in September and may adjust the schedule for teams "
    "that missed their targets.",
    "Coral reefs cover less than one percent of the ocean floor but support about a quarter of all marine "
    "species. Reefs are built by tiny animals called polyps, which live together with algae that provide them "
    "with food through photosynthesis. When the water becomes too warm, the polyps expel the algae and turn "
    "white, a process known as bleaching. If temperatures return to normal quickly, the coral can recover; if "
    "not, it starves and dies.",
    "The printing press developed in Mainz around 1450 combined movable metal type, an oil-based ink and a "
    "screw press adapted from wine making. Before it, books were copied by hand, and a single Bible could take a "
    "scribe more than a year. Within fifty years, presses operated in over two hundred European cities and had "
    "produced millions of books. Cheaper books helped spread literacy, new scientific ideas and religious "
    "debates, and they made it easier to standardize spelling in many languages.",
    "The committee met on Tuesday to discuss the budget for the new community center. Jonas Berg proposed "
    "spending 120,000 dollars on a gym floor, while Priya Nair argued that the money should go to a larger "
    "kitchen for cooking classes. After an hour of debate, members agreed to split the funds: 70,000 for the "
    "floor and 50,000 for the kitchen. The final plan will be presented to the city council on May 14, and "
    "construction is expected to begin in July.",
    "Volcanic soil is among the most fertile in the world. Ash from eruptions is rich in minerals such as "
    "potassium and phosphorus, and it breaks down quickly into fine particles that hold water well. This is why "
    "farms often cluster on the slopes of active volcanoes despite the danger. In some regions, farmers grow "
    "three harvests a year on such soil. Scientists monitor these volcanoes closely so that villages can be "
    "evacuated when an eruption becomes likely.",
    "The train line between the two valleys reopened last week after eighteen months of repairs. Floods had "
    "washed away a bridge and several kilometers of track. Engineers rebuilt the bridge with deeper foundations "
    "and raised the track bed by a meter along the river. Trains now run every thirty minutes, and the journey "
    "takes 42 minutes, eight minutes faster than before. Local businesses say tourism has already begun to "
    "return to the upper valley.",
    "Octopuses have about 500 million neurons, two thirds of which are in their arms rather than their brain. "
    "Each arm can taste and touch on its own and can keep reacting to objects even when cut off from the body. "
    "In experiments, octopuses have opened jars, escaped from tanks and recognized individual human keepers. "
    "Because their last common ancestor with humans lived over 500 million years ago, scientists see them as "
    "an independent evolution of complex intelligence.",
]

GERMAN = [
    "Der Zug nach Berlin hat heute wegen eines Unwetters zwei Stunden Verspätung .",
    "Die Stadt plant , im nächsten Jahr drei neue Schulen zu bauen .",
    "Viele Menschen arbeiten inzwischen von zu Hause aus und sparen so den langen Arbeitsweg .",
    "Der Bürgermeister erklärte , dass die Brücke bis zum Sommer repariert sein werde .",
    "Im Museum wird eine Ausstellung über die Geschichte der Seefahrt gezeigt .",
    "Die Preise für Lebensmittel sind im letzten Monat erneut gestiegen .",
    "Nach dem Spiel feierten die Fans bis spät in die Nacht auf dem Marktplatz .",
    "Das Unternehmen will bis 2030 nur noch erneuerbare Energie nutzen .",
    "Meine Großmutter hat mir beigebracht , wie man Brot backt .",
    "Die Forscher haben eine neue Art von Frosch im Regenwald entdeckt .",
    "Wegen des Streiks fallen morgen die meisten Flüge aus .",
    "Der Roman erzählt die Geschichte einer Familie über drei Generationen .",
    "Die Regierung hat ein neues Gesetz zum Schutz der Wälder beschlossen .",
    "Am Wochenende soll es sonnig und warm werden .",
    "Die Polizei sucht nach Zeugen für den Unfall auf der Autobahn .",
    "Kinder sollten jeden Tag mindestens eine Stunde draußen spielen .",
    "Der Vertrag wurde nach langen Verhandlungen endlich unterschrieben .",
    "In der Bibliothek kann man jetzt auch Werkzeuge ausleihen .",
    "Die neue Software soll die Arbeit in den Krankenhäusern erleichtern .",
    "Er hat seinen Schlüssel verloren und musste den Hausmeister anrufen .",
]
FRENCH = [
    "Le musée sera fermé lundi prochain pour des travaux de rénovation.",
    "Nous avons visité un petit village au bord de la mer pendant les vacances.",
    "La réunion a été reportée à jeudi à cause de la grève.",
    "Les scientifiques étudient l'effet du réchauffement sur les glaciers.",
    "Il faut réserver une table à l'avance, car le restaurant est toujours plein.",
    "Le nouveau pont reliera les deux rives de la rivière d'ici deux ans.",
    "Ma sœur apprend à jouer du piano depuis trois ans.",
    "Le marché du samedi propose des fruits et des légumes de la région.",
]
SPANISH = [
    "El tren sale a las ocho de la mañana y llega a Madrid a mediodía.",
    "La empresa contrató a cincuenta personas nuevas este año.",
    "Mañana lloverá en el norte del país, pero hará sol en el sur.",
    "Los estudiantes presentaron su proyecto sobre energía solar.",
    "Mi abuelo cuenta historias de cuando era pescador.",
    "El ayuntamiento abrirá un parque nuevo en el centro de la ciudad.",
    "La biblioteca amplió su horario durante los exámenes.",
    "Compramos pan, queso y aceitunas para la cena.",
]

TOPICS = ["urban gardening", "remote work", "learning a second language", "electric cars", "public libraries",
          "ocean conservation", "sleep and memory", "minimalist living", "board games", "volunteering",
          "space exploration", "renewable energy", "street food", "digital privacy", "running a marathon",
          "home cooking", "bird watching", "classical music", "recycling", "small businesses"]
PLACES = ["Kyoto", "Lisbon", "the Scottish Highlands", "Patagonia", "Marrakech", "Iceland", "Vancouver",
          "the Amalfi Coast", "Cape Town", "Hanoi"]
PERSONAS = [("a medieval blacksmith", "What do you think of modern factories?"),
            ("a pirate captain", "How do you keep your crew loyal?"),
            ("Sherlock Holmes", "What can you tell about me from my muddy shoes?"),
            ("a friendly museum guide", "Show me the most interesting painting in your gallery."),
            ("an astronaut on the space station", "What does a normal day look like up there?"),
            ("a strict but kind chess coach", "I keep losing in the opening. What should I do?"),
            ("a 1920s jazz musician", "What makes a great performance?"),
            ("a park ranger", "What should I pack for a three-day hike?"),
            ("a time traveler from the year 2300", "What surprised you most about our time?"),
            ("a grumpy cat", "Why won't you get off my keyboard?"),
            ("a wise old tree", "What have you seen in your hundreds of years?"),
            ("a famous chef", "How do I make a simple dinner taste special?")]
CONCEPTS = ["photosynthesis", "how vaccines train the immune system", "the greenhouse effect", "black holes",
            "how a transistor works", "natural selection", "plate tectonics", "entropy", "how GPS finds your position",
            "the difference between weather and climate", "how batteries store energy", "DNA replication",
            "why the sky is blue", "nuclear fusion in stars", "how neural networks learn",
            "the water cycle", "compound interest", "how antibiotics work", "ocean tides", "how airplanes stay in the air"]
HUMANITIES = ["the causes of the French Revolution", "the impact of the printing press on Europe",
              "the role of the Silk Road in cultural exchange", "the main ideas of Stoic philosophy",
              "why the Roman Empire declined", "the influence of the Renaissance on modern art",
              "the Industrial Revolution's effect on family life", "the ethics of eating meat",
              "how democracy worked in ancient Athens", "the legacy of colonialism in Africa",
              "the causes of the First World War", "the role of myths in ancient societies",
              "how the invention of writing changed societies", "the meaning of justice in Plato's Republic"]
CODING = ["checks whether a string is a palindrome", "returns the n-th Fibonacci number iteratively",
          "merges two sorted lists into one sorted list", "counts word frequencies in a text",
          "removes duplicates from a list while keeping the order", "finds the largest prime factor of a number",
          "validates an email address with a regular expression", "flattens a nested list",
          "reads a CSV file and prints the average of a column", "implements binary search",
          "converts a Roman numeral to an integer", "computes the factorial of a number recursively",
          "reverses the words in a sentence", "checks whether two strings are anagrams",
          "returns the most common character in a string", "transposes a matrix given as a list of lists"]
LANGUAGES = ["Python", "JavaScript", "C++", "Java"]
CODE_SNIPPETS = [
    "def f(xs):\n    out = []\n    for x in xs:\n        if x % 2 == 0:\n            out.append(x * x)\n    return out",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5;",
    "const total = items.reduce((sum, item) => sum + item.price * item.qty, 0);",
    "for i in range(1, 16):\n    print('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else i)",
]
QA = ["What is the capital of Australia?", "Who wrote Pride and Prejudice?", "How many planets are in the solar system?",
      "What is the boiling point of water at sea level?", "Who painted the Mona Lisa?", "What is the largest ocean on Earth?",
      "When did the Berlin Wall fall?", "What gas do plants absorb from the air?", "Who was the first person to walk on the Moon?",
      "What is the longest river in Africa?", "How many bones are in the adult human body?", "What language is spoken in Brazil?",
      "Who discovered penicillin?", "What is the hardest natural substance?", "Which planet is known as the Red Planet?",
      "What is the chemical symbol for gold?", "Who composed the Four Seasons?", "What is the smallest prime number?",
      "In which country are the pyramids of Giza?", "What is the speed of light?", "Who invented the telephone?",
      "What is the currency of Japan?", "How many continents are there?", "What is the tallest mountain in the world?",
      "Who wrote the Odyssey?", "What organ pumps blood through the body?", "What is the freezing point of water in Fahrenheit?",
      "Which element has the atomic number 1?", "What year did the Titanic sink?", "Who developed the theory of relativity?"]
NAMES = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam"]
ITEMS = [("notebooks", 3), ("apples", 1), ("concert tickets", 45), ("pencils", 2), ("books", 12), ("cupcakes", 4)]


def _writing(rng):
    out = []
    for topic in TOPICS:
        template = rng.choice(["Write a short blog post about {t}.", "Write a persuasive paragraph arguing for {t}.",
                               "Write a poem about {t}.", "Give me five tips for getting started with {t}.",
                               "Write an email to a friend telling them about your new interest in {t}."])
        out.append(template.format(t=topic))
    for place in PLACES:
        out.append(f"Write a travel diary entry about a day spent in {place}.")
    out += ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
            "Write a thank-you note to a teacher who changed your life.",
            "Write a product description for a reusable water bottle that keeps drinks cold for 24 hours.",
            "Write a limerick about a forgetful robot.", "Write the opening paragraph of a mystery novel set on a train.",
            "Write a speech for the opening of a new community garden.",
            "Write a cover letter for a junior graphic designer position."]
    return out


def _roleplay(rng):
    return [f"Pretend you are {who}. Stay in character. {question}" for who, question in PERSONAS] + [
        "You are a customer service agent for an airline. A passenger's bag was lost. Respond to them.",
        "Act as a job interviewer and ask me three questions for a software engineering role.",
        "Imagine you are a tour guide in ancient Rome. Describe the Colosseum to a group of visitors."]


def _reasoning(rng):
    out = []
    for _ in range(16):
        a, b, c = rng.sample(NAMES, 3)
        out.append(rng.choice([
            f"{a} is taller than {b}, and {b} is taller than {c}. Who is the shortest? Explain your reasoning.",
            f"{a} has twice as many marbles as {b}. {b} has three more marbles than {c}, who has {rng.randint(2, 9)}. "
            f"How many marbles does {a} have?",
            f"If {a} finishes a race before {b}, and {c} finishes right after {a} but before {b}, what is the finishing order?",
            f"{a} says: '{b} is lying.' {b} says: '{c} is lying.' {c} says: 'Both {a} and {b} are lying.' Who is telling the truth?"]))
    out += ["If all bloops are razzies and all razzies are lazzies, are all bloops lazzies? Explain.",
            "A farmer has 17 sheep and all but 9 run away. How many are left?",
            "What comes next in the sequence 2, 6, 12, 20, 30? Explain the pattern.",
            "You have two ropes that each take an hour to burn unevenly. How can you measure 45 minutes?",
            "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. How much does the ball cost?",
            "If it takes 5 machines 5 minutes to make 5 widgets, how long would 100 machines take to make 100 widgets?"]
    return out


def _math(rng):
    out = []
    for _ in range(36):
        name = rng.choice(NAMES)
        item, price = rng.choice(ITEMS)
        n, m, a, b = rng.randint(3, 12), rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 30)
        out.append(rng.choice([
            f"{name} buys {n} {item} at ${price} each and pays with a ${price * n + rng.randint(1, 20)} bill. How much change does {name} get?",
            f"Solve for x: {a}x + {b} = {a * m + b}.",
            f"A rectangle is {n} cm long and {m} cm wide. What are its area and perimeter?",
            f"{name} reads {m} pages every day. How many days will it take to finish a book of {m * n * 10} pages?",
            f"What is {a * 7}% of {b * 20}?",
            f"A train travels {n * 20} km in {m} hours. What is its average speed?",
            f"The ages of {name} and a sibling add up to {n + m + 20}, and {name} is {abs(n - m) + 2} years older. How old is each?",
            f"Find the sum of all whole numbers from 1 to {n * 10}.",
            f"A shop reduces the price of a ${b * 10} jacket by {a * 5}%. What is the new price?",
            f"What is the probability of rolling a total of {m + 2} with two fair six-sided dice?"]))
    return out


def _coding(rng):
    out = [f"Write a {rng.choice(LANGUAGES)} function that {task}." for task in CODING]
    out += [f"Explain what this code does:\n\n{snippet}" for snippet in CODE_SNIPPETS]
    out += ["What is the difference between a list and a tuple in Python?",
            "How do I reverse a linked list? Show the code in Python.",
            "Write a SQL query that finds the three customers who spent the most money.",
            "Explain Big O notation with examples."]
    return out


def _extraction(rng):
    out = []
    for passage in PASSAGES:
        out.append(rng.choice([
            f"Extract every number mentioned in the text below and say what each one refers to.\n\n{passage}",
            f"List all the people, places and organizations named in this text:\n\n{passage}",
            f"Read the text and return its three key facts as a JSON list of strings.\n\n{passage}"]))
    out.append("From the following list, extract the names and ages as a table: Tom, 34, engineer; Sara, 29, "
               "nurse; Ahmed, 41, teacher; Lucia, 25, student.")
    return out


def _translation(rng):
    return ([f"Translate German to English: {s}" for s in GERMAN] + [f"Translate French to English: {s}" for s in FRENCH]
            + [f"Translate Spanish to English: {s}" for s in SPANISH]
            + [f"Translate English to German: {s}" for s in ["Where is the train station?", "I would like a cup of coffee, please.",
                                                             "The meeting starts at nine o'clock."]])


def _summarization(rng):
    out = []
    for passage in PASSAGES:
        out.append(f"Summarize: {passage}")
        out.append(rng.choice([f"Summarize the following text in one sentence.\n\n{passage}",
                               f"Give a short summary of this article for a busy reader:\n\n{passage}"]))
    return out


def _rag(rng):
    questions = ["What is the main point of the passage?", "What problem does the passage describe, and how was it addressed?",
                 "What numbers appear in the passage and what do they measure?", "What might happen next, based on the passage?",
                 "Who or what is the passage mostly about?"]
    out = []
    for passage in PASSAGES:
        for q in rng.sample(questions, 2):
            out.append(f"{passage}\n\nAnswer using only the passage above: {q}")
    return out


def built_in_prompts() -> list[Prompt]:
    """About three hundred prompts, the same on every call."""
    rng = random.Random(20251013)
    groups = {
        "writing": _writing(rng), "roleplay": _roleplay(rng), "reasoning": _reasoning(rng), "math": _math(rng),
        "coding": _coding(rng), "extraction": _extraction(rng),
        "stem": [rng.choice(["Explain {c} in simple terms.", "How would you explain {c} to a high-school student?",
                             "What is {c}, and why does it matter?"]).format(c=c) for c in CONCEPTS],
        "humanities": [rng.choice(["Discuss {h}.", "Write a short essay on {h}.", "What were the key points of {h}?"]).format(h=h)
                       for h in HUMANITIES],
        "translation": _translation(rng), "summarization": _summarization(rng),
        "qa": QA, "rag": _rag(rng),
    }
    prompts, seen = [], set()
    for category, texts in groups.items():
        for text in texts:
            if text not in seen:  # random numbers can repeat a math prompt
                seen.add(text)
                prompts.append(Prompt(category, text))
    return prompts
