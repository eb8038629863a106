"""The built-in prompt set: thousands of varied requests, built from templates x topics, for
distillation and for calibrating quantized drafts.

It covers what chat users ask (writing, roleplay, reasoning, math and multi-step word
problems, coding, extraction, STEM, humanities, translation, summarization, QA, reading
over passages) without a single benchmark prompt: SpecBench is the benchmark, and a draft
trained on it would flatter every figure measured with it (the data engine refuses any prompt
that shares a 13-word run with it: ``distill/benchmark_guard.py``). Every template, passage and
sentence here was written for this module; ``self_written_seeds`` asks the target for more.

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

TOPICS = [
    "urban gardening", "remote work", "learning a second language", "electric cars", "public libraries",
    "ocean conservation", "sleep and memory", "minimalist living", "board games", "volunteering",
    "space exploration", "renewable energy", "street food", "digital privacy", "running a marathon",
    "home cooking", "bird watching", "classical music", "recycling", "small businesses", "beekeeping",
    "photography", "public transport", "video games", "meditation", "budget travel", "electric bikes",
    "composting", "learning to code", "chess", "rock climbing", "online shopping", "fast fashion",
    "coffee culture", "podcasts", "camping", "social media", "houseplants", "jazz", "yoga", "pottery",
    "cycling to work", "fermentation", "time management", "personal finance", "community theater",
    "wildlife photography", "the four-day work week", "artificial intelligence in schools", "smart homes",
    "water conservation", "knitting", "solar panels", "sourdough baking", "language apps", "city parks",
    "tiny houses", "birdsong", "stargazing", "second-hand shopping", "online privacy for children",
    "sustainable fishing", "local elections", "museum visits", "journaling", "learning the piano",
    "homeschooling", "vertical farming", "night shifts", "food waste", "a plant-based diet", "e-books",
    "road trips", "open-source software", "cold showers", "team sports", "public speaking", "bread making",
    "mountain hiking", "urban noise", "car sharing", "dog training", "cat behavior", "aquariums",
    "typography", "calligraphy", "origami", "science fiction", "mystery novels", "poetry slams",
    "job interviews", "moving to a new city", "living abroad", "retirement planning", "first jobs",
    "the history of maps", "weather forecasting", "earthquakes", "rainforests", "deserts", "glaciers",
    "the human microbiome", "vaccination", "handwashing", "first aid", "daylight saving time", "drones",
    "3D printing", "quantum computers", "electric planes", "high-speed rail", "space tourism",
]
PLACES = ["Kyoto", "Lisbon", "the Scottish Highlands", "Patagonia", "Marrakech", "Iceland", "Vancouver",
          "the Amalfi Coast", "Cape Town", "Hanoi", "Istanbul", "Buenos Aires", "Prague", "Seoul", "Nairobi",
          "the Norwegian fjords", "Oaxaca", "Tasmania", "Kraków", "Havana", "the Swiss Alps", "Zanzibar",
          "Montreal", "Edinburgh", "Bali", "Petra", "the Galápagos Islands", "Tbilisi", "Ljubljana", "Cusco"]
OCCASIONS = ["a retirement party", "a wedding toast", "a graduation ceremony", "a team's first product launch",
             "the opening of a bakery", "a school reunion", "a farewell to a colleague", "a charity run",
             "the first day of a new semester", "a neighborhood clean-up", "a library's 100th birthday"]
CHARACTERS = ["a lighthouse keeper", "a retired detective", "a young inventor", "a lonely robot", "a street musician",
              "a night-shift nurse", "a beekeeper", "a ship's cook", "a mapmaker", "a clockmaker", "a ghost",
              "a dragon who hates fire", "a girl who can talk to birds", "an old fisherman", "a nervous astronaut",
              "a baker who never sleeps", "twin sisters", "a stray dog", "a substitute teacher", "a time traveler"]
TWISTS = ["finds a message in a bottle", "loses their memory", "discovers a hidden door", "wins a strange contest",
          "receives a letter from the future", "has to keep a secret", "gets stuck in an elevator",
          "meets their younger self", "finds a map with no names", "must cross a frozen lake",
          "inherits a mysterious shop", "hears a song no one else can hear"]
GENRES = ["short story", "fable", "science-fiction story", "mystery", "bedtime story", "comedy sketch", "ghost story",
          "fairy tale", "adventure story", "diary entry"]
WRITING_TEMPLATES = [
    "Write a short blog post about {t}.", "Write a persuasive paragraph arguing for {t}.", "Write a poem about {t}.",
    "Give me five tips for getting started with {t}.", "Write an email to a friend about your new interest in {t}.",
    "Write a short opinion piece on {t}.", "Write a haiku sequence about {t}.", "Write a newsletter intro about {t}.",
    "Draft a tweet thread explaining why {t} matters.", "Write a product pitch for an app about {t}.",
    "Write a motivational speech about {t}.", "Write a funny limerick about {t}.",
    "Write a letter to the editor about {t}.", "Write a short essay on the pros and cons of {t}.",
    "Write a dialogue between two friends disagreeing about {t}.", "Write a FAQ section for a website about {t}.",
    "Write a list of ten creative ideas related to {t}.", "Describe {t} to someone from the 18th century.",
]
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
            ("a famous chef", "How do I make a simple dinner taste special?"),
            ("a personal fitness trainer", "I have twenty minutes a day. Plan my week."),
            ("a Victorian-era doctor", "I have a headache. What do you prescribe?"),
            ("a travel agent", "Plan a cheap weekend trip for me."),
            ("a dungeon master", "Start a fantasy adventure for me."),
            ("a career counselor", "I am bored at my job. What should I consider?"),
            ("a librarian", "Recommend me three books for a long flight."),
            ("a mountain guide", "Is it safe to climb today?"),
            ("a stand-up comedian", "Tell me a joke about computers."),
            ("a detective interrogating a suspect", "Where were you last night?"),
            ("a spaceship's computer", "Report the status of the ship."),
            ("a kindergarten teacher", "Explain why we have to share toys."),
            ("a sommelier", "What should I drink with pizza?"),
            ("an ancient Greek philosopher", "What is a good life?"),
            ("a news anchor", "Report on a town that banned cars for a day."),
            ("a customer support agent for an internet company", "My connection keeps dropping."),
            ("a real estate agent", "Convince me to buy a tiny house."),
            ("a tour guide in ancient Rome", "Describe the Colosseum to our group."),
            ("a job interviewer for a software role", "Ask me your first three questions."),
            ("a lifeguard", "Explain the beach rules to a group of kids."),
            ("a gardener", "Why are my tomato leaves turning yellow?"),
            ("a retired sea captain", "Tell me about the worst storm you sailed through."),
            ("a robot learning human emotions", "What does it feel like to be happy?"),
            ("a medieval king", "Your kingdom is facing a drought. What do you decree?")]
ROLEPLAY_TEMPLATES = ["Pretend you are {who}. Stay in character. {q}", "You are {who}. {q}",
                      "Act as {who} and answer me: {q}", "Role-play as {who}. I say: '{q}'"]
CONCEPTS = [
    "photosynthesis", "how vaccines train the immune system", "the greenhouse effect", "black holes",
    "how a transistor works", "natural selection", "plate tectonics", "entropy", "how GPS finds your position",
    "the difference between weather and climate", "how batteries store energy", "DNA replication",
    "why the sky is blue", "nuclear fusion in stars", "how neural networks learn", "the water cycle",
    "compound interest", "how antibiotics work", "ocean tides", "how airplanes stay in the air",
    "how the heart pumps blood", "the theory of relativity", "how a refrigerator works", "osmosis",
    "the periodic table", "how rainbows form", "the speed of sound", "how magnets work", "supply and demand",
    "how the internet routes data", "what causes the seasons", "how volcanoes erupt", "the immune response",
    "how solar cells make electricity", "the Doppler effect", "what an algorithm is", "how vaccines are tested",
    "how bridges carry weight", "what inflation is", "how the eye sees color", "the carbon cycle",
    "how earthquakes are measured", "what a gene is", "how lasers work", "why ice floats", "how sound travels",
    "how encryption protects messages", "what a calorie is", "how muscles grow", "the big bang theory",
    "how hurricanes form", "how a microwave oven heats food", "why leaves change color in autumn",
    "how batteries in electric cars are recycled", "what dark matter is", "how the moon affects the tides",
    "how a computer's memory works", "how bees make honey", "the life cycle of a star", "how clouds form",
]
STEM_TEMPLATES = ["Explain {c} in simple terms.", "How would you explain {c} to a high-school student?",
                  "What is {c}, and why does it matter?", "Give a step-by-step explanation of {c}.",
                  "What are common misconceptions about {c}?", "Explain {c} using an everyday analogy.",
                  "Write a short lesson plan that teaches {c}."]
HUMANITIES = [
    "the causes of the French Revolution", "the impact of the printing press on Europe",
    "the role of the Silk Road in cultural exchange", "the main ideas of Stoic philosophy",
    "why the Roman Empire declined", "the influence of the Renaissance on modern art",
    "the Industrial Revolution's effect on family life", "the ethics of eating meat",
    "how democracy worked in ancient Athens", "the legacy of colonialism in Africa",
    "the causes of the First World War", "the role of myths in ancient societies",
    "how the invention of writing changed societies", "the meaning of justice in Plato's Republic",
    "the civil rights movement in the United States", "the history of the Olympic Games",
    "the fall of the Berlin Wall", "the spread of Buddhism in Asia", "the Meiji Restoration in Japan",
    "the abolition of slavery", "the causes of the Great Depression", "the Cold War space race",
    "the role of women in the Second World War", "the philosophy of Confucius", "utilitarianism",
    "the ethics of artificial intelligence", "the history of the printing of money", "the Black Death",
    "the Protestant Reformation", "the Aztec Empire", "the invention of the steam engine",
    "the history of jazz", "the rise of the novel", "existentialism", "the United Nations' founding",
    "the Magna Carta", "the Harlem Renaissance", "the history of vaccination", "the Mongol Empire",
    "the partition of India", "free will and determinism", "the social contract", "the history of chess",
    "the Age of Exploration", "the origins of democracy in England", "the impact of television on society",
]
HUMANITIES_TEMPLATES = ["Discuss {h}.", "Write a short essay on {h}.", "What were the key points of {h}?",
                        "Explain {h} to a curious teenager.", "What can we learn today from {h}?",
                        "Give three different perspectives on {h}.", "Summarize the main debates about {h}."]
CODING_TASKS = [
    "checks whether a string is a palindrome", "returns the n-th Fibonacci number iteratively",
    "merges two sorted lists into one sorted list", "counts word frequencies in a text",
    "removes duplicates from a list while keeping the order", "finds the largest prime factor of a number",
    "validates an email address with a regular expression", "flattens a nested list",
    "reads a CSV file and prints the average of a column", "implements binary search",
    "converts a Roman numeral to an integer", "computes the factorial of a number recursively",
    "reverses the words in a sentence", "checks whether two strings are anagrams",
    "returns the most common character in a string", "transposes a matrix given as a list of lists",
    "sorts a list of dictionaries by a key", "checks whether a number is prime", "computes the GCD of two numbers",
    "generates all permutations of a list", "finds the longest common prefix of a list of strings",
    "converts Celsius to Fahrenheit", "counts the vowels in a string", "implements a stack with push and pop",
    "implements a queue using two stacks", "finds the second largest number in a list",
    "checks whether parentheses in a string are balanced", "rotates a list by k positions",
    "computes the running average of a stream of numbers", "parses a date string and prints the weekday",
    "implements bubble sort", "implements quicksort", "finds all pairs in a list that sum to a target",
    "capitalizes the first letter of every word", "computes the edit distance between two strings",
    "reads a text file and prints its ten longest lines", "implements a simple LRU cache",
    "checks whether a year is a leap year", "converts a number to binary", "finds the median of a list",
    "splits a list into chunks of size n", "merges two dictionaries", "counts the lines in a file",
    "returns the intersection of two lists", "checks whether a linked list has a cycle",
    "implements depth-first search on a graph", "implements breadth-first search on a grid",
    "computes the sum of digits of a number", "generates the first n prime numbers", "shuffles a list in place",
]
LANGUAGES = ["Python", "JavaScript", "C++", "Java", "Go", "Rust", "TypeScript", "C#"]
CODE_SNIPPETS = [
    "def f(xs):\n    out = []\n    for x in xs:\n        if x % 2 == 0:\n            out.append(x * x)\n    return out",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5;",
    "const total = items.reduce((sum, item) => sum + item.price * item.qty, 0);",
    "for i in range(1, 16):\n    print('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else i)",
    "def g(s):\n    seen = {}\n    for i, c in enumerate(s):\n        if c in seen:\n            return i\n        seen[c] = i\n    return -1",
    "int count = 0;\nfor (int i = 0; i < n; i++)\n    for (int j = i + 1; j < n; j++)\n        if (a[i] > a[j]) count++;",
    "words = text.lower().split()\ncounts = {w: words.count(w) for w in set(words)}\nprint(sorted(counts.items(), key=lambda kv: -kv[1])[:3])",
    "function debounce(fn, ms) {\n  let t;\n  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };\n}",
    "UPDATE accounts SET balance = balance * 1.02 WHERE opened < '2020-01-01';",
    "x = [i * i for i in range(10) if i % 3]\nprint(sum(x))",
]
CODING_QUESTIONS = [
    "What is the difference between a list and a tuple in Python?", "How do I reverse a linked list? Show the code.",
    "Write a SQL query that finds the three customers who spent the most money.", "Explain Big O notation with examples.",
    "What is recursion? Give a simple example.", "What is the difference between a process and a thread?",
    "How does a hash table work?", "When should I use a class instead of a function?",
    "Explain what an API is with an example.", "What does 'git rebase' do, and when should I use it?",
    "How do I read a JSON file in Python?", "What is the difference between == and === in JavaScript?",
    "Explain how garbage collection works.", "What is a race condition? How can I avoid one?",
    "Write a regular expression that matches a US phone number.", "What are unit tests and why do they matter?",
    "How do I handle exceptions in Java?", "Explain the difference between SQL and NoSQL databases.",
    "What is dependency injection?", "How does HTTPS keep data safe?",
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
COUNTRIES = ["Canada", "Kenya", "Peru", "Norway", "Vietnam", "Egypt", "Argentina", "Poland", "Thailand", "Ghana",
             "Portugal", "Chile", "Finland", "Morocco", "Indonesia", "Ireland", "Mexico", "Greece", "Nepal", "Turkey",
             "South Korea", "New Zealand", "Hungary", "Colombia", "Ethiopia", "the Netherlands", "Sweden", "Brazil",
             "India", "Japan", "Italy", "Spain", "Germany", "France", "China", "Nigeria", "Australia", "Iceland"]
COUNTRY_QUESTIONS = ["What is the capital of {c}?", "What language is mostly spoken in {c}?",
                     "What is {c} famous for?", "What is the climate like in {c}?", "What currency does {c} use?",
                     "Name three traditional dishes from {c}.", "What is the population of {c}, roughly?",
                     "When did {c} become independent, if it was ever colonized?"]
THINGS = ["the light bulb", "the printing press", "the telescope", "the bicycle", "paper money", "the compass",
          "the airplane", "the vaccine against smallpox", "the World Wide Web", "the steam engine", "the radio",
          "the microscope", "antibiotics", "the telephone", "the zipper", "the dishwasher", "the pencil",
          "the refrigerator", "the camera", "the electric guitar", "the calculator", "the barcode"]
THING_QUESTIONS = ["Who invented {x}, and when?", "How did {x} change everyday life?", "How does {x} work?",
                   "What came before {x}?"]
NAMES = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam",
         "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wei", "Yusuf", "Zoe"]
ITEMS = [("notebooks", 3), ("apples", 1), ("concert tickets", 45), ("pencils", 2), ("books", 12), ("cupcakes", 4),
         ("T-shirts", 15), ("movie tickets", 9), ("bags of rice", 6), ("plants", 8), ("toy cars", 5), ("mugs", 7)]
GERMAN_SUBJECTS = ["Der Bürgermeister", "Die Lehrerin", "Mein Nachbar", "Die Regierung", "Das Unternehmen",
                   "Die Stadt", "Der Verein", "Die Forscherin", "Der Bäcker", "Die Schülerin", "Die Polizei",
                   "Der Trainer", "Die Ärztin", "Das Museum", "Die Bank"]
GERMAN_PREDICATES = ["hat gestern eine wichtige Entscheidung getroffen", "plant für das nächste Jahr große Veränderungen",
                     "will die Kosten deutlich senken", "hat einen neuen Rekord aufgestellt",
                     "kritisiert die hohen Preise für Energie", "hat die Ergebnisse der Studie vorgestellt",
                     "sucht dringend neue Mitarbeiter", "wird im Sommer eine Ausstellung eröffnen",
                     "hat sich für mehr Radwege eingesetzt", "musste den Termin kurzfristig absagen",
                     "freut sich über die vielen Besucher", "hat eine Spende für die Schule angekündigt"]
GERMAN_TAILS = ["", ", obwohl viele Bürger dagegen sind", ", weil die Nachfrage gestiegen ist",
                ", wie eine Sprecherin am Montag mitteilte", ", nachdem es lange Diskussionen gegeben hatte",
                " und hofft auf mehr Unterstützung"]
FRENCH_SUBJECTS = ["Le maire", "La directrice", "Mon voisin", "Le gouvernement", "L'entreprise", "La ville",
                   "Le club", "La chercheuse", "Le boulanger", "L'école"]
FRENCH_PREDICATES = ["a annoncé un nouveau projet", "veut réduire les dépenses", "a ouvert un musée",
                     "prépare une grande fête", "a reçu un prix important", "cherche de nouveaux employés",
                     "a fermé la route pour des travaux", "a présenté les résultats de l'année"]
FRENCH_TAILS = ["", " malgré la pluie", " la semaine dernière", " pour aider les familles", " après de longs débats"]
SPANISH_SUBJECTS = ["El alcalde", "La profesora", "Mi vecino", "El gobierno", "La empresa", "La ciudad",
                    "El equipo", "La investigadora", "El panadero", "La escuela"]
SPANISH_PREDICATES = ["ha anunciado un nuevo plan", "quiere bajar los precios", "abrió una biblioteca",
                      "organiza un festival", "ganó un premio importante", "busca nuevos trabajadores",
                      "cerró la calle por obras", "presentó los resultados del año"]
SPANISH_TAILS = ["", " a pesar de la lluvia", " la semana pasada", " para ayudar a las familias", " tras largos debates"]
TRANSLATION_TEMPLATES = ["Translate {lang} to English: {s}", "Translate the following {lang} text into English:\n{s}",
                         "What does this {lang} sentence mean in English? {s}", "{lang}: {s}\nEnglish:"]
ENGLISH_SENTENCES = ["Where is the train station?", "I would like a cup of coffee, please.",
                     "The meeting starts at nine o'clock.", "Could you help me carry these boxes?",
                     "The museum is closed on Mondays.", "We are planning a trip to the mountains next summer.",
                     "My brother works as a nurse in a large hospital.", "Please send me the report by Friday.",
                     "The weather will be cold and rainy tomorrow.", "She has lived in this city for ten years."]
SUMMARY_TEMPLATES = ["Summarize: {p}", "Summarize the following text in one sentence.\n\n{p}",
                     "Give a short summary of this article for a busy reader:\n\n{p}",
                     "Write a headline and a two-sentence summary for this text:\n\n{p}",
                     "Summarize the key points of this passage as bullet points.\n\n{p}",
                     "TL;DR of the following:\n{p}", "Condense this into three sentences:\n\n{p}"]
EXTRACTION_TEMPLATES = ["Extract every number mentioned in the text below and say what each one refers to.\n\n{p}",
                        "List all the people, places and organizations named in this text:\n\n{p}",
                        "Read the text and return its three key facts as a JSON list of strings.\n\n{p}",
                        "From this text, extract all dates and what happened on them:\n\n{p}",
                        "Turn the main facts of this text into a table with two columns, fact and detail.\n\n{p}"]
RAG_QUESTIONS = ["What is the main point of the passage?", "What problem does the passage describe, and how was it addressed?",
                 "What numbers appear in the passage and what do they measure?", "What might happen next, based on the passage?",
                 "Who or what is the passage mostly about?", "What is one surprising detail in the passage?",
                 "Does the passage give any reasons for what happened? Which ones?", "What is the passage's conclusion?"]
RAG_TEMPLATES = ["{p}\n\nAnswer using only the passage above: {q}", "Context: {p}\n\nQuestion: {q}\nAnswer:",
                 "Read the passage and answer the question.\n\nPassage: {p}\n\nQuestion: {q}",
                 "Based on this document:\n{p}\n\n{q}"]
SELF_WRITTEN_QUESTION_SEEDS = [
    "Write one question that a curious person might ask an assistant about {t}. Reply with the question only.",
    "Write a request that someone might type into a chatbot about {t}. Reply with the request only.",
    "Write a homework question about {c}. Reply with the question only.",
    "Write one question a traveler might ask about {place}. Reply with the question only.",
    "Write a short math word problem about {item}. Reply with the problem only.",
    "Write a programming question a beginner might ask about {task}. Reply with the question only.",
]
SELF_WRITTEN_PASSAGE_SEEDS = [
    "Write a short news article, about 120 words, about {t} in a small town.",
    "Write a short encyclopedia-style paragraph about {c}.",
    "Write a short report, about 100 words, about a new study on {t}.",
    "Write a short story, about 120 words, in which {who} {twist}.",
    "Write a short company announcement about {t}.",
]


def _writing(rng):
    out = []
    for topic in TOPICS:
        out += [template.format(t=topic) for template in rng.sample(WRITING_TEMPLATES, 4)]
    for place in PLACES:
        out += [f"Write a travel diary entry about a day spent in {place}.",
                f"Write a travel blog post about a week in {place}, with tips for first-time visitors.",
                f"Write a postcard message from {place} to your grandmother."]
    for who in CHARACTERS:
        for twist in rng.sample(TWISTS, 3):
            out.append(f"Write a {rng.choice(GENRES)} about {who} who {twist}.")
    for occasion in OCCASIONS:
        out += [f"Write a short speech for {occasion}.", f"Write a card message for {occasion}."]
    return out


def _roleplay(rng):
    out = []
    for who, question in PERSONAS:
        out += [t.format(who=who, q=question) for t in rng.sample(ROLEPLAY_TEMPLATES, 2)]
        out.append(f"You are {who}. Introduce yourself and describe your day.")
    return out


def _reasoning(rng):
    out = []
    for _ in range(240):
        a, b, c, d = rng.sample(NAMES, 4)
        out.append(rng.choice([
            f"{a} is taller than {b}, and {b} is taller than {c}. Who is the shortest? Explain your reasoning.",
            f"{a} has twice as many marbles as {b}. {b} has three more marbles than {c}, who has {rng.randint(2, 9)}. "
            f"How many marbles does {a} have?",
            f"If {a} finishes a race before {b}, and {c} finishes right after {a} but before {b}, what is the finishing order?",
            f"{a} says: '{b} is lying.' {b} says: '{c} is lying.' {c} says: 'Both {a} and {b} are lying.' Who is telling the truth?",
            f"{a}, {b}, {c} and {d} sit in a row. {a} is not at either end, {b} sits right of {c}, and {d} is at the "
            f"left end. Give one possible seating order and explain.",
            f"{a} is older than {b} but younger than {c}. {d} is the youngest. Rank them from oldest to youngest.",
            f"Every student in {a}'s class plays chess or soccer. {rng.randint(10, 20)} play chess, {rng.randint(8, 15)} "
            f"play soccer and {rng.randint(2, 7)} play both. How many students are in the class?",
            f"{a} always tells the truth on Mondays and lies on other days. Today {a} said 'Yesterday was Sunday.' "
            f"What day is it?"]))
    out += ["If all bloops are razzies and all razzies are lazzies, are all bloops lazzies? Explain.",
            "A farmer has 17 sheep and all but 9 run away. How many are left?",
            "What comes next in the sequence 2, 6, 12, 20, 30? Explain the pattern.",
            "You have two ropes that each take an hour to burn unevenly. How can you measure 45 minutes?",
            "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. How much does the ball cost?",
            "If it takes 5 machines 5 minutes to make 5 widgets, how long would 100 machines take to make 100 widgets?",
            "What weighs more, a kilogram of feathers or a kilogram of iron?",
            "A clock shows 3:15. What is the angle between the hour and minute hands?"]
    return out


def _math(rng):
    out = []
    for _ in range(700):
        name, other = rng.sample(NAMES, 2)
        item, price = rng.choice(ITEMS)
        n, m, a, b = rng.randint(3, 12), rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 30)
        out.append(rng.choice([
            f"{name} buys {n} {item} at ${price} each and pays with a ${price * n + rng.randint(1, 20)} bill. How much change does {name} get?",
            f"Solve for x: {a}x + {b} = {a * m + b}.",
            f"A rectangle is {n} cm long and {m} cm wide. What are its area and perimeter?",
            f"{name} reads {m} pages every day. How many days will it take to finish a book of {m * n * 10} pages?",
            f"What is {a * 7}% of {b * 20}?",
            f"A train travels {n * 20} km in {m} hours. What is its average speed?",
            f"The ages of {name} and {other} add up to {n + m + 20}, and {name} is {abs(n - m) + 2} years older. How old is each?",
            f"Find the sum of all whole numbers from 1 to {n * 10}.",
            f"A shop reduces the price of a ${b * 10} jacket by {a * 5}%. What is the new price?",
            f"What is the probability of rolling a total of {m + 2} with two fair six-sided dice?",
            f"{name} saves ${a * 5} every week. {other} saves ${b} every week and already has ${n * 10}. After how many "
            f"weeks will {name} have saved more than {other}? Show your work step by step.",
            f"A recipe needs {m} eggs for {a * 2} cookies. How many eggs are needed for {a * 2 * n} cookies?",
            f"{name} had {n * 10} {item}. {name} gave {other} {n} of them and then bought {m} more. How many "
            f"{item} does {name} have now? Explain each step.",
            f"A class has {n + 20} students. {a * 10}% of them walk to school and the rest take the bus. How many take the bus?",
            f"{name} runs {m} km on weekdays and {n} km on Saturdays. How far does {name} run in {a} weeks?",
            f"A tank holds {n * 50} liters and is filled at {m * 5} liters per minute. How long does it take to fill it?",
            f"{name} earns ${b + 10} per hour and works {m + 30} hours a week. After tax of {a * 3}%, how much does "
            f"{name} take home each week?",
            f"If {n} workers build a wall in {m * 2} days, how long would {n * 2} workers take, working at the same rate?",
            f"What is the least common multiple of {a * 2} and {m * 3}?", f"Simplify the fraction {a * n}/{a * m}.",
            f"Compute ({a} + {b}) x {m} - {n}.", f"What is the square root of {(n + a) ** 2}?",
            f"A circle has a radius of {m} cm. What are its circumference and area?",
            f"Convert {n * 100} minutes into hours and minutes."]))
    return out


def _coding(rng):
    out = []
    for task in CODING_TASKS:
        out += [f"Write a {language} function that {task}." for language in rng.sample(LANGUAGES, 3)]
        out.append(f"How would you write a program that {task}? Explain the idea before the code.")
    out += [f"Explain what this code does:\n\n{snippet}" for snippet in CODE_SNIPPETS]
    out += [f"Find and fix any bugs in this code, then explain the fix:\n\n{snippet}" for snippet in CODE_SNIPPETS]
    return out + CODING_QUESTIONS


def _passage_prompts(rng, passages: list[str]) -> dict[str, list[str]]:
    """Extraction, summarization and reading prompts over a set of passages."""
    out = {"extraction": [], "summarization": [], "rag": []}
    for passage in passages:
        out["extraction"] += [t.format(p=passage) for t in rng.sample(EXTRACTION_TEMPLATES, 2)]
        out["summarization"] += [t.format(p=passage) for t in rng.sample(SUMMARY_TEMPLATES, 3)]
        out["rag"] += [rng.choice(RAG_TEMPLATES).format(p=passage, q=q) for q in rng.sample(RAG_QUESTIONS, 3)]
    return out


def _translation(rng):
    out = []
    for language, subjects, predicates, tails, sentences in (
            ("German", GERMAN_SUBJECTS, GERMAN_PREDICATES, GERMAN_TAILS, GERMAN),
            ("French", FRENCH_SUBJECTS, FRENCH_PREDICATES, FRENCH_TAILS, FRENCH),
            ("Spanish", SPANISH_SUBJECTS, SPANISH_PREDICATES, SPANISH_TAILS, SPANISH)):
        composed = [f"{s} {p}{t}." for s in subjects for p in rng.sample(predicates, 4) for t in rng.sample(tails, 1)]
        for sentence in sentences + composed:
            out.append(rng.choice(TRANSLATION_TEMPLATES).format(lang=language, s=sentence))
    for sentence in ENGLISH_SENTENCES:
        for language in ("German", "French", "Spanish"):
            out.append(f"Translate English to {language}: {sentence}")
    return out


def _qa(rng):
    out = list(QA)
    for country in COUNTRIES:
        out += [q.format(c=country) for q in rng.sample(COUNTRY_QUESTIONS, 3)]
    for thing in THINGS:
        out += [q.format(x=thing) for q in rng.sample(THING_QUESTIONS, 2)]
    return out


def built_in_prompts() -> list[Prompt]:
    """Several thousand prompts from templates, the same on every call."""
    rng = random.Random(20251013)
    groups = {
        "writing": _writing(rng), "roleplay": _roleplay(rng), "reasoning": _reasoning(rng), "math": _math(rng),
        "coding": _coding(rng),
        "stem": [t.format(c=c) for c in CONCEPTS for t in rng.sample(STEM_TEMPLATES, 3)],
        "humanities": [t.format(h=h) for h in HUMANITIES for t in rng.sample(HUMANITIES_TEMPLATES, 3)],
        "translation": _translation(rng), "qa": _qa(rng), **_passage_prompts(rng, PASSAGES),
    }
    return _distinct(groups)


def self_written_seeds(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(kind, instruction) pairs asking the target to write a prompt ("question") or a passage
    ("passage"); what it writes becomes more prompts (``prompts_from_self_written``)."""
    rng = random.Random(seed)
    fill = lambda template: template.format(t=rng.choice(TOPICS), c=rng.choice(CONCEPTS), place=rng.choice(PLACES),
                                            item=rng.choice(ITEMS)[0], task=rng.choice(CODING_TASKS),
                                            who=rng.choice(CHARACTERS), twist=rng.choice(TWISTS))
    seeds = []
    for i in range(count):
        kind = "passage" if i % 3 == 2 else "question"
        seeds.append((kind, fill(rng.choice(SELF_WRITTEN_PASSAGE_SEEDS if kind == "passage"
                                                 else SELF_WRITTEN_QUESTION_SEEDS))))
    return seeds


def prompts_from_self_written(written: list[tuple[str, str]], seed: int = 0) -> list[Prompt]:
    """The target's own questions become prompts of the "self_written" category, its passages
    summarization, extraction and reading prompts. Too short, too long or unfinished texts are dropped."""
    rng = random.Random(seed)
    questions, passages = [], []
    for kind, text in written:
        text = text.strip().strip('"').strip()
        if kind == "passage" and text[-1:] not in ".!?":  # cut off by the length limit: end at a sentence
            text = text[:text.rfind(". ") + 1]
        words = len(text.split())
        if kind == "question" and 4 <= words <= 80:
            questions.append(text)
        elif kind == "passage" and 50 <= words <= 300:
            passages.append(text)
    return _distinct({"self_written": questions, **_passage_prompts(rng, passages)})


def _distinct(groups: dict[str, list[str]]) -> list[Prompt]:
    prompts, seen = [], set()
    for category, texts in groups.items():
        for text in texts:
            if text not in seen:  # random numbers can repeat a math prompt
                seen.add(text)
                prompts.append(Prompt(category, text))
    return prompts
